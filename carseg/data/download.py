"""Fetching the Carvana competition files with the kaggle package."""

from __future__ import annotations

import contextlib
import io
import zipfile
from pathlib import Path

from carseg import console
from carseg.data.carvana import extract_kaggle_zips
from carseg.errors import CarsegError

COMPETITION = "carvana-image-masking-challenge"
BY_HAND = (
    f"Or download by hand from https://www.kaggle.com/c/{COMPETITION}/data (accept the rules first) and put "
    "train.zip, train_masks.zip, train_masks.csv.zip and metadata.csv.zip (test.zip for predictions) in {dir}; "
    "carseg extracts them on first use"
)


def download(data_dir: str | Path, include_test: bool = False) -> Path:
    """Download the competition files into `data_dir` and extract them."""
    root = Path(data_dir)
    hint = BY_HAND.format(dir=root)
    try:  # importing kaggle may try to authenticate and print a long help text
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as err:
        raise CarsegError(
            f"the kaggle package cannot be imported ({err}): pip install 'carseg[kaggle]'. {hint}"
        ) from err
    api = KaggleApi()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            api.authenticate()
    except (OSError, ValueError, KeyError, SystemExit) as err:
        raise CarsegError(
            "no Kaggle credentials: create an API token on kaggle.com (Settings → API) and save it as "
            "~/.kaggle/kaggle.json (chmod 600; newer kaggle versions: ~/.kaggle/access_token or KAGGLE_API_TOKEN), "
            f"or set KAGGLE_USERNAME and KAGGLE_KEY; KAGGLE_CONFIG_DIR moves the folder. {hint}"
        ) from err
    root.mkdir(parents=True, exist_ok=True)
    names = ["train.zip", "train_masks.zip", "train_masks.csv.zip", "metadata.csv.zip"]
    if include_test:
        names.append("test.zip")
    try:
        for name in names:
            if not (root / name).is_file():
                console.info(f"downloading {name} ...")
                api.competition_download_file(COMPETITION, name, path=str(root), quiet=False)
                _unwrap(root / name)
    except Exception as err:  # network errors, 403 before the rules are accepted, ...
        raise CarsegError(
            f"download from Kaggle failed ({type(err).__name__}: {err}). Check the network and that you accepted "
            f"the competition rules. {hint}"
        ) from err
    extract_kaggle_zips(root)
    return root


def _unwrap(path: Path) -> None:
    """Kaggle may wrap a file in a zip named `<file>.zip`; leave the inner zip at `path`."""
    wrapped = path.with_name(path.name + ".zip")
    if wrapped.is_file() and not path.is_file():
        with zipfile.ZipFile(wrapped) as zf:
            zf.extractall(path.parent)
        wrapped.unlink()
