"""Evaluate a checkpoint (the newest run's best by default): `python evaluate.py [ckpt_path=...]` (same as
`carseg-evaluate`)."""

from carseg.entrypoints.evaluate import main

if __name__ == "__main__":
    main()
