"""The XMarket download against a local HTTP server: never the internet."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmr.cli import app
from training.download import XMARKET_FILES, DownloadError, download_xmarket


class Server:
    """A loopback HTTP server over a folder that counts the requests it answers."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                server.requests.append(self.path)

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    root = tmp_path / "remote"
    root.mkdir()
    files = {}
    for name, text in [("aa_5core.txt", "userId itemId rate date\n"), ("bb_5core.txt", "x\n")]:
        (root / name).write_text(text)
        files[name] = hashlib.sha256(text.encode()).hexdigest()
    server = Server(root)
    yield server, files
    server.close()


def test_downloads_verifies_and_skips_present_files(
    tmp_path: Path, served: tuple[Server, dict[str, str]]
) -> None:
    server, files = served
    dest = tmp_path / "data"
    assert download_xmarket(dest, server.url, files=files) == {n: "downloaded" for n in files}
    assert sorted(p.name for p in dest.iterdir()) == sorted(files)
    fetched = len(server.requests)
    assert download_xmarket(dest, server.url, files=files) == {n: "present" for n in files}
    assert len(server.requests) == fetched  # nothing fetched again
    (dest / "aa_5core.txt").write_text("corrupted")
    assert download_xmarket(dest, server.url, files=files)["aa_5core.txt"] == "replaced"
    assert hashlib.sha256((dest / "aa_5core.txt").read_bytes()).hexdigest() == files["aa_5core.txt"]


def test_checksum_mismatch_leaves_no_file(
    tmp_path: Path, served: tuple[Server, dict[str, str]]
) -> None:
    server, _ = served
    wrong = {"aa_5core.txt": "0" * 64}
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_xmarket(tmp_path / "data", server.url, files=wrong)
    assert list((tmp_path / "data").iterdir()) == []


def test_missing_remote_file_is_a_clear_error(
    tmp_path: Path, served: tuple[Server, dict[str, str]]
) -> None:
    server, _ = served
    with pytest.raises(DownloadError, match=r"cannot download .*cc_5core\.txt"):
        download_xmarket(tmp_path / "data", server.url, files={"cc_5core.txt": "0" * 64})


def test_offline_is_a_clear_error(tmp_path: Path) -> None:
    server = Server(tmp_path)
    url = server.url
    server.close()  # nothing listens on that port any more
    with pytest.raises(DownloadError, match="Without internet access"):
        download_xmarket(tmp_path / "data", url, files={"aa_5core.txt": "0" * 64}, timeout=5)


def test_cli_downloads_the_real_files_from_a_local_mirror(
    tmp_path: Path, xmarket_dir: Path
) -> None:
    server = Server(xmarket_dir)
    try:
        result = CliRunner().invoke(
            app, ["data", "download", "--dest", str(tmp_path), "--base-url", server.url]
        )
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    for name in XMARKET_FILES:
        assert f"{name}: downloaded" in result.output
        assert (tmp_path / name).read_bytes() == (xmarket_dir / name).read_bytes()


def test_cli_download_offline_exits_with_message(tmp_path: Path) -> None:
    server = Server(tmp_path)
    url = server.url
    server.close()
    result = CliRunner().invoke(
        app,
        ["data", "download", "--dest", str(tmp_path / "d"), "--base-url", url, "--timeout", "5"],
    )
    assert result.exit_code == 2
    assert "error: cannot download" in result.output
    assert "Traceback" not in result.output
