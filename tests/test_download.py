"""SAM downloads and checks: the published full SHA-256, resuming an interrupted ``.part`` over HTTP range requests (a
real HTTP server on 127.0.0.1: no outside network), starting over when a server cannot resume, and ``rea2seg models
check`` verifying files already present without ever deleting one."""
from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from rea2seg import errors
from rea2seg.models.download import SAM_CHECKPOINTS, SamCheckpoint, checkpoint_problem, download_sam

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: more than one read chunk


class _Server:
    """Serves ``PAYLOAD`` at /sam.pth. ``ranges``: honour Range requests (206 + Content-Range) or ignore them (200);
    ``cut_after``: drop the connection after sending this many bytes of the first response (an interrupted
    download). Records the Range header of every request."""

    def __init__(self, ranges: bool = True, cut_after: int | None = None):
        self.ranges, self.cut_after, self.requests = ranges, cut_after, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append(rng)
                start = 0
                if rng and server.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None and len(server.requests) == 1:
                    self.wfile.write(body[:server.cut_after])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the network drops mid-file
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sam.pth"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def published(monkeypatch):
    """vit_b stands for a small published file: PAYLOAD with its size and full SHA-256."""
    ck = SamCheckpoint("vit_b", "sam_vit_b_01ec64.pth", "http://unused", len(PAYLOAD),
                       hashlib.sha256(PAYLOAD).hexdigest())
    monkeypatch.setitem(SAM_CHECKPOINTS, "vit_b", ck)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return ck


def _quiet(done, total):
    pass


def test_published_hashes_are_full_sha256_not_the_file_name_digits():
    """Meta's file names end in six hex digits of the MD5, not of the SHA-256: checking a download against them
    rejects every genuine file (and used to delete the 2.5 GB download)."""
    published = {"vit_h": "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                 "vit_l": "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                 "vit_b": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"}
    for kind, ck in SAM_CHECKPOINTS.items():
        assert ck.sha256 == published[kind]
        assert not ck.sha256.startswith(ck.filename.rsplit("_", 1)[-1].split(".")[0])


def test_genuine_file_named_with_its_md5_prefix_passes(tmp_path, monkeypatch):
    """A file whose name carries its MD5 prefix (Meta's convention) and whose SHA-256 is published verifies."""
    data = b"a genuine checkpoint"
    name = f"sam_vit_b_{hashlib.md5(data).hexdigest()[:6]}.pth"
    ck = SamCheckpoint("vit_b", name, "http://unused", len(data), hashlib.sha256(data).hexdigest())
    (tmp_path / name).write_bytes(data)
    assert checkpoint_problem(tmp_path / name, ck) is None
    (tmp_path / name).write_bytes(b"a corrupt checkpoint")  # same size, other bytes
    assert "sha256" in checkpoint_problem(tmp_path / name, ck)


def test_download_verified_and_atomic(tmp_path, published):
    server = _Server()
    try:
        got = download_sam("vit_b", tmp_path, url=server.url, progress=_quiet)
    finally:
        server.close()
    assert got == tmp_path / published.filename and got.read_bytes() == PAYLOAD
    assert not list(tmp_path.glob("*.part")) and server.requests == [None]
    assert download_sam("vit_b", tmp_path, url="http://127.0.0.1:9/unreachable") == got  # present: no fetch


def test_interrupted_download_resumes_with_a_range_request(tmp_path, published):
    server = _Server(ranges=True, cut_after=300_000)
    try:
        with pytest.raises(errors.ModelError, match="resumes"):
            download_sam("vit_b", tmp_path, url=server.url, progress=_quiet)
        part = tmp_path / (published.filename + ".part")
        assert part.exists() and 0 < part.stat().st_size < len(PAYLOAD), "the partial download is kept"
        assert not (tmp_path / published.filename).exists(), "nothing under the final name until it is whole"
        have = part.stat().st_size
        got = download_sam("vit_b", tmp_path, url=server.url, progress=_quiet)
    finally:
        server.close()
    assert server.requests == [None, f"bytes={have}-"], "the second request asks only for the missing bytes"
    assert got.read_bytes() == PAYLOAD and not part.exists()


def test_server_without_ranges_restarts_cleanly(tmp_path, published):
    part = tmp_path / (published.filename + ".part")
    part.write_bytes(PAYLOAD[:5000])
    server = _Server(ranges=False)
    try:
        got = download_sam("vit_b", tmp_path, url=server.url, progress=_quiet)
    finally:
        server.close()
    assert server.requests == ["bytes=5000-"]
    assert got.read_bytes() == PAYLOAD, "a 200 reply is the whole file: the .part is rewritten, not appended to"


def test_complete_part_is_verified_without_refetching(tmp_path, published):
    part = tmp_path / (published.filename + ".part")
    part.write_bytes(PAYLOAD)
    server = _Server(ranges=True)
    try:
        got = download_sam("vit_b", tmp_path, url=server.url, progress=_quiet)
    finally:
        server.close()
    assert server.requests == [f"bytes={len(PAYLOAD)}-"] and got.read_bytes() == PAYLOAD


def test_corrupt_part_fails_verification_and_only_the_part_goes(tmp_path, published):
    part = tmp_path / (published.filename + ".part")
    part.write_bytes(b"X" * 5000)  # not a prefix of the file: resuming after it gives a wrong whole
    server = _Server(ranges=True)
    try:
        with pytest.raises(errors.CheckpointError, match="sha256"):
            download_sam("vit_b", tmp_path, url=server.url, progress=_quiet)
        assert not part.exists() and not (tmp_path / published.filename).exists()
        got = download_sam("vit_b", tmp_path, url=server.url, progress=_quiet)  # the retry starts clean
    finally:
        server.close()
    assert got.read_bytes() == PAYLOAD


def test_models_check_verifies_and_never_deletes(tmp_path, published, monkeypatch, capsys):
    from rea2seg.cli.main import main

    monkeypatch.setenv("REA2SEG_MODELS_DIR", str(tmp_path))
    sams = tmp_path / "sams"
    sams.mkdir()
    good = sams / published.filename
    good.write_bytes(PAYLOAD)
    assert main(["models", "check", "vit_b"]) == 0
    assert "sha256 verified" in capsys.readouterr().out
    mine = PAYLOAD[:-4] + b"mine"  # same size, other content: e.g. the user's own fine-tune under that name
    good.write_bytes(mine)
    assert main(["models", "check", "vit_b"]) == 3
    out = capsys.readouterr().out
    assert "WARNING" in out and "left as it is" in out and "rea2seg models download vit_b" in out, out
    assert good.read_bytes() == mine, "a user's file is never deleted"


def test_offline_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(errors.ModelNotFoundError, match="rea2seg models download vit_l"):
        download_sam("vit_l", tmp_path)

