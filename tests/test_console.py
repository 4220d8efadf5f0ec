"""carseg's messages reach the console whatever else configured logging before them."""

import logging
import sys

from carseg import console


def test_messages_survive_a_disabled_logger_and_a_root_console(capsys, monkeypatch):
    console.info("first")
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [*root.handlers, logging.StreamHandler(sys.stderr)])
    monkeypatch.setattr(console.LOG, "disabled", True)  # as logging.config.dictConfig leaves loggers it omits
    console.info("second")
    console.warning("third")
    captured = capsys.readouterr()
    assert "carseg: second" in captured.out and "carseg: warning: third" in captured.err
