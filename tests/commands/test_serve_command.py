"""`python -m kr1.serve`: a missing index or a port in use is one line (the server: tests/run/test_serving.py)."""

from __future__ import annotations

import socket

from kr1.serve import main


def test_serve_reports_a_missing_index_in_one_line(tmp_path, one_line_error):
    line = one_line_error(lambda: main(["--index", str(tmp_path / "none")]))
    assert str(tmp_path / "none") in line


def test_serve_reports_a_port_in_use_in_one_line(index_factory, one_line_error):  # before Ray or Serve start
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(lambda: main(["--index", str(index_factory(2)), "--port", str(port)]))
    assert line == f"error: cannot serve {index_factory(2)} on 127.0.0.1:{port}: Address already in use"
