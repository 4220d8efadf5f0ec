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
            "edge_tta": None,
            "compile": "auto",
        }
    once = predictor_options(build_parser().parse_args([*head, "--ckpt", str(a), "--tta", "--no-edge-tta"]))
    assert once["tta"] is True and once["edge_tta"] is False


def test_unreadable_photos_get_their_true_reason_and_are_named(tmp_path):
    """A file of text is no photo (not a truncated one), and the console names the first failures."""
    from carseg.cli import _first_failures
    from carseg.inference.photos import PhotoDataset

    (tmp_path / "notes.jpg").write_text("not a photo at all")
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [tmp_path / "notes.jpg", tmp_path / "empty.png"]
    items = [PhotoDataset(paths, [0, 1])[i] for i in range(2)]
    assert all(item["image"] is None for item in items)
    assert "not a JPEG, PNG or WebP image" in items[0]["error"] and "truncated" not in items[0]["error"]
    assert "empty (0 bytes)" in items[1]["error"]
    failures = tmp_path / "failures.csv"
    rows = [(f"/p/{i}.jpg", f"/p/{i}.jpg: not a JPEG or PNG photo") for i in range(8)]
    failures.write_text("path,reason\n" + "".join(f"{p},{r}\n" for p, r in rows))
    shown = _first_failures(failures)
    assert "/p/0.jpg: not a JPEG or PNG photo" in shown and "/p/4.jpg" in shown and "/p/5.jpg" not in shown
    assert shown.endswith("... and 3 more")


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--header-timeout", "0"], "--header-timeout"),
        (["--body-timeout", "-5"], "--body-timeout"),
        (["--max-connections", "0"], "--max-connections"),
        (["--max-upload-mb", "0"], "--max-upload-mb"),
        (["--max-megapixels", "-1"], "--max-megapixels"),
        (["--api-key", ""], "--api-key is empty"),
        (["--api-key", "clé"], "--api-key: use printable ASCII"),
    ],
)
def test_serve_limits_are_checked_before_the_model_loads(flags, named, tmp_path):
    (tmp_path / "a.ckpt").write_bytes(b"x")
    args = build_parser().parse_args(["serve", "--ckpt", str(tmp_path / "a.ckpt"), *flags])
    with pytest.raises(CarsegError, match=named):
        args.func(args)
