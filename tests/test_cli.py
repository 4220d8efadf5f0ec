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


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_predict_and_serve_share_one_model_option_set(command, tmp_path):
    """`--ckpt A --ckpt B` is an ensemble of both in either command, and the options reach the predictor
    typed, from one function."""
    from carseg.cli import build_parser, predictor_options

    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    for path in (a, b):
        path.write_bytes(b"x")
    head = ["predict", "photos/"] if command == "predict" else ["serve"]
    for ckpts in (["--ckpt", str(a), "--ckpt", str(b)], ["--ckpt", str(a), str(b)]):
        args = build_parser().parse_args([*head, *ckpts, "--tta", "--refine-radius", "3", "--no-refiner"])
        options = predictor_options(args)
        assert options == {
            "ckpt": [str(a), str(b)],
            "onnx": None,
            "tta": True,
            "precision": "auto",
            "refine_radius": 3,
            "edge_refiner": False,
        }
