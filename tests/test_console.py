"""carseg's messages reach the console whatever else configured logging before them."""

import logging
import logging.config
import sys

from carseg import console


def test_messages_survive_a_dictconfig_and_a_root_console(capsys, monkeypatch):
    console.info("first")
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [*root.handlers, logging.StreamHandler(sys.stderr)])
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    were = {lg: lg.disabled for lg in loggers}
    try:
        logging.config.dictConfig({"version": 1, "incremental": False})  # disables the loggers it does not name
        console.info("second")
        console.warning("third")
    finally:
        for lg, disabled in were.items():  # the other tests' loggers as they were
            lg.disabled = disabled
    captured = capsys.readouterr()
    assert "carseg: second" in captured.out and "carseg: warning: third" in captured.err
