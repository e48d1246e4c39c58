"""Train a volume regressor: ``python train.py model=keras_faithful`` (Hydra overrides)."""

from volreg.train import main

if __name__ == "__main__":
    main()
