"""The CSV logger keeps a resumed run's history."""

import pandas as pd

from carseg.training.loggers import CSVLogger


def _write(folder, steps):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": s // 10, "step": s, "train/loss_step": 1.0 / (s + 1)} for s in steps]
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)


def test_a_run_resumed_in_its_folder_keeps_the_rows_before_the_resume_point(tmp_path):
    """Rows of steps 0..48 were logged; the run resumes at step 30: rows 0..28 stay, 30.. are the new ones,
    and a new column joins them."""
    _write(tmp_path / "csv", range(0, 50, 2))
    logger = CSVLogger(tmp_path, name="csv", version="")
    for step in (30, 32):
        logger.log_metrics({"train/loss_step": 7.0, "val/iou": 0.5}, step=step)
    logger.save()
    table = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert table["step"].tolist() == [*range(0, 30, 2), 30, 32]
    assert (table.loc[table["step"] >= 30, "train/loss_step"] == 7.0).all()
    assert table.loc[table["step"] < 30, "val/iou"].isna().all() and table["epoch"].iloc[3] == 0
    assert table.loc[table["step"] == 20, "train/loss_step"].item() == 1.0 / 21


def test_a_fresh_folder_starts_empty(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    assert pd.read_csv(tmp_path / "csv" / "metrics.csv").to_dict("records") == [{"a": 1.0, "step": 0}]
