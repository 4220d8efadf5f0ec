"""The `carseg` command's own parsing."""

import pytest

from carseg.cli import build_parser, parse_input_size
from carseg.errors import CarsegError


@pytest.mark.parametrize("values,expected", [(["train"], "train"), (["native"], None), (["320", "480"], [320, 480])])
def test_input_size(values, expected):
    assert parse_input_size(values) == expected


@pytest.mark.parametrize("values", [["big"], ["320"], ["320", "x"], ["0", "480"], ["320", "480", "3"], ["-1", "4"]])
def test_bad_input_size_is_named(values):
    with pytest.raises(CarsegError, match=r"--input-size .*train, native, or H W"):
        parse_input_size(values)


def test_benchmarks_take_their_data_folder_from_the_caller():
    """No sample-data path is built into the command: `make bench-*` passes one."""
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "infer"])
    assert parser.parse_args(["bench", "infer", "some/dir"]).dir == "some/dir"
    assert parser.parse_args(["bench", "train"]).data is None
