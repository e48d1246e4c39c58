"""Evaluate a checkpoint on a test set: ``python eval.py ckpt_path=...`` (Hydra overrides)."""

from volreg.evaluate import main

if __name__ == "__main__":
    main()
