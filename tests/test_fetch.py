"""foldnet.data.fetch / sources against a real HTTP server on 127.0.0.1.

The server (stdlib ThreadingHTTPServer on an ephemeral port, one per test) serves
files of the real data bundle under the URL layouts of RCSB, the CATH REST API and
the CATH release tree, answers HTTP range requests, and can misbehave on demand:
drop the connection half-way through a body that announced its full length,
ignore ranges, answer 5xx. Every request is recorded so tests can assert how many
were made and which carried a Range header.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from foldnet.data import fetch, sources
from foldnet.data.errors import ParseError

REPO = Path(__file__).resolve().parent.parent
PROMOD = "promod3_structure_db/pdb_single_domain"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server naming)
        srv = self.server
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, rng))
            n = len(srv.requests)
        status = srv.statuses.pop(0) if srv.statuses else None
        if isinstance(status, tuple):  # (status, Retry-After value)
            self.send_response(status[0])
            self.send_header("Retry-After", status[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if status is not None:
            self.send_error(status)
            return
        if srv.silent:  # accept, read the request, never answer (bounded for teardown)
            srv.release.wait(timeout=5.0)
            self.close_connection = True
            return
        path = srv.resolve(self.path)
        if path is None:
            self.send_error(404)
            return
        if n == 1 and self.path in srv.replace_after_first:
            srv.routes[self.path] = srv.replace_after_first[self.path]  # published anew meanwhile
        data = path.read_bytes()
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        start, end = 0, len(data) - 1
        code = 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if_range = self.headers.get("If-Range")
        with srv.lock:
            srv.if_ranges.append(if_range)
        if m and not srv.ignore_range and (if_range is None or if_range == etag):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            code = 206
        body = data[start:end + 1]
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if n <= srv.stall_first:
            # Send half, then go silent (bounded) so the client's read timeout fires.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            srv.release.wait(timeout=3.0)
            self.close_connection = True
            return
        if srv.always_drop or n <= srv.drop_first:
            # Announce the whole length, send half, hang up: a connection dropped mid-file.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.routes: dict[str, Path] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.statuses: list = []  # statuses (or (status, Retry-After)) to answer first, one per request
        self.silent = False
        self.drop_first = 0
        self.stall_first = 0
        self.release = threading.Event()  # ends a stall early at teardown
        self.always_drop = False
        self.ignore_range = False
        self.replace_after_first: dict[str, Path] = {}
        self.if_ranges: list[str | None] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def resolve(self, url_path: str) -> Path | None:
        if url_path in self.routes:
            return self.routes[url_path]
        candidate = (self.root / url_path.lstrip("/")).resolve()
        if self.root.resolve() in candidate.parents and candidate.is_file():
            return candidate
        return None

    def handle_error(self, request, client_address):  # a client that hung up is expected here
        pass

    def ranges(self) -> list[str]:
        return [r for _, r in self.requests if r]


@pytest.fixture
def server(data_root):
    srv = _Server(data_root)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


FAST = dict(retries=3, backoff=0.01, timeout=5)


# ----------------------------------------------------------------------------- download core


def test_real_file_byte_identical_then_cached(server, data_root, tmp_path):
    src = data_root / "cath_tools_testdata" / "1c0pA01"
    dest = tmp_path / "1c0pA01.pdb"
    info = fetch.download_with_info(f"{server.base}/cath_tools_testdata/1c0pA01", dest,
                                    sha256=hashlib.sha256(src.read_bytes()).hexdigest(), **FAST)
    assert dest.read_bytes() == src.read_bytes()
    assert (info.cached, info.nbytes, info.attempts, info.resumed) == (False, 124173, 1, False)
    assert not fetch.part_path(dest).exists()
    # A cached dest with a matching checksum is returned without any request.
    before = len(server.requests)
    again = fetch.download_with_info(f"{server.base}/cath_tools_testdata/1c0pA01", dest,
                                     md5=hashlib.md5(src.read_bytes()).hexdigest(), **FAST)
    assert again.cached and len(server.requests) == before


def test_stale_cache_is_downloaded_again(server, data_root, tmp_path):
    src = data_root / "cath_tools_testdata" / "1hdoA00"
    dest = tmp_path / "1hdoA00"
    dest.write_bytes(b"an older, different file\n")
    out = fetch.download(f"{server.base}/cath_tools_testdata/1hdoA00", dest,
                         sha256=hashlib.sha256(src.read_bytes()).hexdigest(), **FAST)
    assert out.read_bytes() == src.read_bytes() and len(server.requests) == 1


def test_dropped_connection_resumes_with_range(server, data_root, tmp_path):
    src = data_root / PROMOD / "16vpA.pdb.gz"
    server.routes["/download/16VP.pdb.gz"] = src
    server.drop_first = 1
    dest = tmp_path / "16vp.pdb.gz"
    info = fetch.download_with_info(f"{server.base}/download/16VP.pdb.gz", dest, **FAST)
    size = src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()
    # First request: whole file, cut after size // 2 bytes; second: the rest by range.
    assert server.requests == [("/download/16VP.pdb.gz", None), ("/download/16VP.pdb.gz", f"bytes={size // 2}-")]
    assert info.resumed and info.attempts == 2 and info.nbytes == size


def test_read_timeout_is_retried_and_resumed(server, data_root, tmp_path):
    src = data_root / "cath_tools_testdata" / "1zjaA02"
    server.stall_first = 1
    dest = tmp_path / "1zjaA02"
    info = fetch.download_with_info(f"{server.base}/cath_tools_testdata/1zjaA02", dest, retries=2,
                                    backoff=0.01, timeout=1.0)
    assert dest.read_bytes() == src.read_bytes()
    assert info.resumed and server.ranges() == [f"bytes={src.stat().st_size // 2}-"]


def test_stale_part_from_another_file_is_redone_whole(server, data_root, tmp_path):
    src = data_root / "cath_tools_testdata" / "1r7aA02"
    data = src.read_bytes()
    dest = tmp_path / "1r7aA02"
    fetch.part_path(dest).write_bytes(b"X" * 1000)  # left by a different version of the file
    info = fetch.download_with_info(f"{server.base}/cath_tools_testdata/1r7aA02", dest,
                                    sha256=hashlib.sha256(data).hexdigest(), **FAST)
    assert dest.read_bytes() == data and info.attempts == 2
    assert [r for _, r in server.requests] == ["bytes=1000-", None]


def test_file_changed_between_attempts_is_not_spliced(server, data_root, tmp_path):
    old = data_root / "cath_tools_testdata" / "1g5aA03"
    new = data_root / "cath_tools_testdata" / "1wzaA02"
    server.routes["/dom.pdb"] = old
    server.replace_after_first["/dom.pdb"] = new
    server.drop_first = 1
    dest = tmp_path / "dom.pdb"
    info = fetch.download_with_info(f"{server.base}/dom.pdb", dest, **FAST)
    # The resume carried If-Range with the old ETag, so the server sent the new file whole.
    assert server.if_ranges == [None, '"' + hashlib.md5(old.read_bytes()).hexdigest() + '"']
    assert dest.read_bytes() == new.read_bytes() and not info.resumed


def test_server_ignoring_range_restarts_cleanly(server, data_root, tmp_path):
    src = data_root / "cath_tools_testdata" / "1c55A"
    server.drop_first = 1
    server.ignore_range = True  # answers 200 with the whole file to a range request
    dest = tmp_path / "1c55A"
    info = fetch.download_with_info(f"{server.base}/cath_tools_testdata/1c55A", dest, **FAST)
    assert dest.read_bytes() == src.read_bytes()
    assert len(server.ranges()) == 1 and not info.resumed


def test_always_dropping_server_fails_after_retries_and_keeps_resumable_part(server, data_root, tmp_path):
    src = data_root / "cath_tools_testdata" / "1hykA"
    data = src.read_bytes()
    server.always_drop = True
    dest = tmp_path / "1hykA"
    with pytest.raises(fetch.DownloadError, match=r"failed after 3 attempts.*kept in") as e:
        fetch.download(f"{server.base}/cath_tools_testdata/1hykA", dest, retries=2, backoff=0.01, timeout=5)
    assert "connection closed after" in str(e.value)
    assert len(server.requests) == 3 and not dest.exists()
    # Each attempt appended half of what was left: the part is a true prefix of the file.
    part = fetch.part_path(dest).read_bytes()
    n1 = len(data) // 2
    n2 = n1 + (len(data) - n1) // 2
    n3 = n2 + (len(data) - n2) // 2
    assert len(part) == n3 and data.startswith(part)
    assert server.ranges() == [f"bytes={n1}-", f"bytes={n2}-"]
    # A later call on a healthy connection continues from the part and completes the file.
    server.always_drop = False
    info = fetch.download_with_info(f"{server.base}/cath_tools_testdata/1hykA", dest, **FAST)
    assert dest.read_bytes() == data and info.resumed and server.ranges()[-1] == f"bytes={n3}-"
    assert not fetch.part_path(dest).exists()


def test_complete_part_answered_416_is_finished(server, data_root, tmp_path):
    src = data_root / "cath_tools_testdata" / "1wmtA"
    dest = tmp_path / "1wmtA"
    fetch.part_path(dest).write_bytes(src.read_bytes())  # e.g. killed just before the rename
    fetch.download(f"{server.base}/cath_tools_testdata/1wmtA", dest, **FAST)
    assert dest.read_bytes() == src.read_bytes()
    assert server.requests == [("/cath_tools_testdata/1wmtA", f"bytes={src.stat().st_size}-")]


def test_404_fails_immediately(server, tmp_path):
    dest = tmp_path / "nothing.pdb"
    with pytest.raises(fetch.NotFoundError, match=r"/download/9ZZZ\.pdb\.gz: HTTP 404"):
        fetch.download(f"{server.base}/download/9ZZZ.pdb.gz", dest, retries=5, backoff=0.01)
    assert len(server.requests) == 1
    assert not dest.exists() and not fetch.part_path(dest).exists()


def test_5xx_is_retried_with_backoff(server, data_root, tmp_path):
    server.statuses = [503, 500]
    dest = tmp_path / "1wt7A"
    fetch.download(f"{server.base}/cath_tools_testdata/1wt7A", dest, **FAST)
    assert dest.read_bytes() == (data_root / "cath_tools_testdata" / "1wt7A").read_bytes()
    assert len(server.requests) == 3


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "1c0pA01"
    with pytest.raises(fetch.ChecksumError, match="sha256 mismatch"):
        fetch.download(f"{server.base}/cath_tools_testdata/1c0pA01", dest, sha256="0" * 64, **FAST)
    assert not dest.exists() and not fetch.part_path(dest).exists()
    assert len(server.requests) == 1  # a whole, fresh download that mismatches is final


def test_corrupt_gzip_is_rejected(server, data_root, tmp_path):
    data = (data_root / PROMOD / "1a17A.pdb.gz").read_bytes()
    bad = tmp_path / "served" / "bad.pdb.gz"
    bad.parent.mkdir()
    bad.write_bytes(data[:-12] + bytes(12))  # zeroed CRC-32 / length trailer
    server.routes["/bad.pdb.gz"] = bad
    dest = tmp_path / "bad.pdb.gz"
    with pytest.raises(fetch.ChecksumError, match="corrupt gzip"):
        fetch.download(f"{server.base}/bad.pdb.gz", dest, **FAST)
    assert not dest.exists() and not fetch.part_path(dest).exists()


def test_offline_connection_refused(tmp_path):
    dest = tmp_path / "x.pdb.gz"
    with pytest.raises(fetch.OfflineError) as e:
        fetch.download(f"http://127.0.0.1:{_closed_port()}/download/1CRN.pdb.gz", dest, **FAST)
    msg = str(e.value)
    assert "offline" in msg and "FOLDNET_DATA" in msg and "base_url" in msg and str(dest) in msg
    assert not dest.exists() and not fetch.part_path(dest).exists()


def test_gunzip_and_local_mirror(server, data_root, tmp_path):
    src = data_root / PROMOD / "1a1xA.pdb.gz"
    plain = gzip.decompress(src.read_bytes())
    out = fetch.download(f"{server.base}/{PROMOD}/1a1xA.pdb.gz", tmp_path / "1a1x.pdb", gunzip=True, **FAST)
    assert out.read_bytes() == plain
    # A file:// URL (a local mirror) goes through the same verification, without a server.
    local = fetch.download(src.as_uri(), tmp_path / "local" / "1a1x.pdb.gz",
                           md5=hashlib.md5(src.read_bytes()).hexdigest())
    assert local.read_bytes() == src.read_bytes()
    with pytest.raises(fetch.NotFoundError, match="does not exist"):
        fetch.download((tmp_path / "missing.gz").as_uri(), tmp_path / "m.gz")


# ----------------------------------------------------------------------------- sources


def test_pdb_urls_for_each_mirror():
    assert sources.pdb_url("1crnA") == "https://files.rcsb.org/download/1CRN.pdb.gz"
    assert sources.pdb_url("1CRN", "cif") == "https://files.rcsb.org/download/1CRN.cif.gz"
    assert sources.pdb_url("1crn", mirror="wwpdb") == (
        "https://files.wwpdb.org/pub/pdb/data/structures/divided/pdb/cr/pdb1crn.ent.gz")
    assert sources.pdb_url("4HHB", "cif", mirror="pdbe") == (
        "https://ftp.ebi.ac.uk/pub/databases/pdb/data/structures/divided/mmCIF/hh/4hhb.cif.gz")
    assert sources.pdb_url("1crn", url_template="file:///m/{mid}/{ID}.{fmt}") == "file:///m/cr/1CRN.pdb"
    with pytest.raises(ValueError, match="unknown placeholder"):
        sources.pdb_url("1crn", url_template="http://x/{chain}.pdb")
    with pytest.raises(ValueError, match="not a PDB ID"):
        sources.normalize_pdb_id("crn1")
    assert [sources.normalize_pdb_id(t) for t in ("1A34-A", "16vp_A", "2XYZ")] == ["1a34", "16vp", "2xyz"]


def test_cath_urls():
    assert sources.cath_file_url("domain-list") == (
        "https://download.cathdb.info/cath/releases/all-releases/v4_3_0/cath-classification-data/"
        "cath-domain-list-v4_3_0.txt")
    assert sources.cath_file_url("cath-domain-boundaries.txt", version="latest") == (
        "https://download.cathdb.info/cath/releases/latest-release/cath-classification-data/"
        "cath-domain-boundaries.txt")
    assert sources.cath_file_url("nonredundant-S40.pdb.tgz", version="4.3.0") == (
        "https://download.cathdb.info/cath/releases/all-releases/v4_3_0/non-redundant-data-sets/"
        "cath-dataset-nonredundant-S40-v4_3_0.pdb.tgz")
    assert sources.cath_domain_url("1C0PA01") == "https://www.cathdb.info/version/v4_3_0/api/rest/id/1c0pA01.pdb"
    with pytest.raises(ValueError, match="expected one of"):
        sources.cath_file_url("domain-lists")


def test_fetch_pdb_batch_reports_failures(server, data_root, tmp_path):
    names = {"16VP": "16vpA", "1A17": "1a17A", "1A1X": "1a1xA"}
    for pid, name in names.items():
        server.routes[f"/download/{pid}.pdb.gz"] = data_root / PROMOD / f"{name}.pdb.gz"
    report = sources.fetch_pdb(["16vpA", "1a17", "9zzz", "1A1X", "1a17A"], base_url=f"{server.base}/download",
                               cache_dir=tmp_path, workers=2, **FAST)
    assert [(i.key, i.status) for i in report.items] == [
        ("16vp", "fetched"), ("1a17", "fetched"), ("9zzz", "failed"), ("1a1x", "fetched")]
    assert "9ZZZ.pdb.gz: HTTP 404" in report.failed[0].reason
    for pid, name in names.items():
        got = tmp_path / "pdb" / f"{pid.lower()}.pdb.gz"
        assert got.read_bytes() == (data_root / PROMOD / f"{name}.pdb.gz").read_bytes()
    assert "3 fetched" in report.summary() and "FAILED 9zzz" in report.summary()
    n = len(server.requests)
    again = sources.fetch_pdb(["16vp", "1a17"], base_url=f"{server.base}/download", cache_dir=tmp_path, **FAST)
    assert [i.status for i in again.items] == ["cached", "cached"] and len(server.requests) == n


def test_error_pages_are_not_accepted_as_data(server, tmp_path):
    page = tmp_path / "served" / "error.html"
    page.parent.mkdir()
    page.write_text("<!DOCTYPE html><html><body>Service temporarily unavailable</body></html>\n")
    server.routes["/download/1CRN.pdb.gz"] = page
    server.routes["/version/v4_3_0/api/rest/id/1crnA00.pdb"] = page
    gz = sources.fetch_pdb(["1crn"], base_url=f"{server.base}/download", cache_dir=tmp_path, **FAST)
    assert "corrupt gzip" in gz.failed[0].reason
    dom = sources.fetch_cath_domain(["1crnA00"], base_url=server.base, cache_dir=tmp_path, **FAST)
    assert "an error page?" in dom.failed[0].reason
    assert len(server.requests) == 2  # wrong content is final, not retried
    assert not any(p.is_file() for p in tmp_path.rglob("*") if "served" not in p.parts)


def test_fetch_cath_domains_and_list(server, data_root, tmp_path):
    for dom in ("1c0pA01", "1hdoA00"):
        server.routes[f"/version/v4_3_0/api/rest/id/{dom}.pdb"] = data_root / "cath_tools_testdata" / dom
    report = sources.fetch_cath_domain(["1c0pA01", "1hdoA00", "9zzzA01"], base_url=server.base,
                                       cache_dir=tmp_path, **FAST)
    assert [i.status for i in report.items] == ["fetched", "fetched", "failed"]
    got = tmp_path / "cath" / "v4_3_0" / "domains" / "1c0pA01.pdb"
    assert got.read_bytes() == (data_root / "cath_tools_testdata" / "1c0pA01").read_bytes()

    lst = data_root / "cath_classification" / "cath-dataset-nonredundant-S40-v4_3_0.list"
    server.routes["/cath/releases/all-releases/v4_3_0/non-redundant-data-sets/"
                  "cath-dataset-nonredundant-S40-v4_3_0.list"] = lst
    rep = sources.fetch_cath_list("nonredundant-S40.list", base_url=f"{server.base}/cath/releases",
                                  cache_dir=tmp_path, md5=hashlib.md5(lst.read_bytes()).hexdigest(), **FAST)
    assert rep.ok and rep.items[0].path.read_bytes() == lst.read_bytes()
    assert rep.items[0].path == tmp_path / "cath" / "v4_3_0" / "cath-dataset-nonredundant-S40-v4_3_0.list"
    # The downloaded list feeds straight back in as an ids_file: 31,885 lines, one duplicate
    # (2oarA02 is listed twice in the real file), so 31,884 distinct domains.
    ids = sources.collect_ids([], rep.items[0].path, sources.normalize_cath_domain)
    assert len(ids) == 31884 and ids[:2] == ["12asA00", "132lA00"] and "2oarA02" in ids


def _tarball(dest: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def test_fetch_pdnet_archive_and_extract(server, data_root, tmp_path):
    real = data_root / "pdnet_related" / "disteval_1guuA"
    files = {f"data/psicov/{p.name}": p.read_bytes() for p in sorted(real.iterdir())}
    served = tmp_path / "served"
    served.mkdir()
    server.routes["/pdnet/train-data.tar.gz"] = _tarball(served / "train-data.tar.gz", files)
    server.drop_first = 1  # the big archive is where resuming matters
    report = sources.fetch_pdnet(base_url=f"{server.base}/pdnet", cache_dir=tmp_path / "cache", **FAST)
    assert [(i.key, i.status) for i in report.items] == [
        ("train-data.tar.gz", "fetched"), ("train-data.tar.gz (extract)", "fetched")]
    out = tmp_path / "cache" / "pdnet" / "train-data"
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert len(server.ranges()) == 1
    again = sources.fetch_pdnet(base_url=f"{server.base}/pdnet", cache_dir=tmp_path / "cache", **FAST)
    assert [i.status for i in again.items] == ["cached", "cached"]


def test_fetch_cath_nonredundant_archive(server, data_root, tmp_path):
    doms = ("1c0pA01", "1hdoA00", "2j7jA03")
    members = {f"dompdb/{d}": (data_root / "cath_tools_testdata" / d).read_bytes() for d in doms}
    served = tmp_path / "served"
    served.mkdir()
    tgz = _tarball(served / "s40.tgz", members)
    server.routes["/releases/all-releases/v4_3_0/non-redundant-data-sets/"
                  "cath-dataset-nonredundant-S40-v4_3_0.pdb.tgz"] = tgz
    report = sources.fetch_cath_nonredundant("S40", base_url=f"{server.base}/releases", cache_dir=tmp_path,
                                             md5=hashlib.md5(tgz.read_bytes()).hexdigest(), **FAST)
    assert report.ok and len(report.items) == 2
    out = tmp_path / "cath" / "v4_3_0" / "nonredundant-S40" / "dompdb"
    assert sorted(p.name for p in out.iterdir()) == sorted(doms)
    assert all((out / d).read_bytes() == members[f"dompdb/{d}"] for d in doms)


def test_unsafe_archive_is_refused(tmp_path):
    evil = _tarball(tmp_path / "evil.tar.gz", {"../escape.txt": b"x", "ok.txt": b"y"})
    with pytest.raises(fetch.DownloadError, match="cannot extract"):
        sources.extract_archive(evil, tmp_path / "out" / "evil")
    assert not (tmp_path / "out" / "escape.txt").exists() and not (tmp_path / "out" / "evil").exists()
    assert list((tmp_path / "out").iterdir()) == []  # the temporary folder is gone too


def test_offline_batch_stops_early(tmp_path):
    report = sources.fetch_pdb(["1crn", "4hhb", "2xyz"], base_url=f"http://127.0.0.1:{_closed_port()}",
                               cache_dir=tmp_path, workers=1, **FAST)
    assert [i.status for i in report.items] == ["failed"] * 3
    assert "offline" in report.items[0].reason
    assert all(i.reason.startswith("not attempted") for i in report.items[1:])


def test_ids_file_errors_name_the_line(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("# my list\n1c0pA01 3.40.50.720\n\n1hdoA0\n")
    with pytest.raises(ParseError, match=r"ids\.txt:4: '1hdoA0' is not a CATH domain ID"):
        sources.collect_ids([], f, sources.normalize_cath_domain)
    # hydra reads the PDB ID 1e10 as a float; the message says to quote it.
    with pytest.raises(ValueError, match="quote it"):
        sources.collect_ids([1e10], None, sources.normalize_pdb_id)
    assert sources.collect_ids(["1e10", 1234], None, sources.normalize_pdb_id) == ["1e10", "1234"]


# ----------------------------------------------------------------------------- CLI


def test_cli_fetch_subprocess(server, data_root, tmp_path):
    server.routes["/download/16VP.cif.gz"] = tmp_path / "16vp.cif.gz"
    # A real mmCIF payload: the bundle holds PDB files only, so wrap a minimal data block.
    (tmp_path / "16vp.cif.gz").write_bytes(gzip.compress(b"data_16VP\n#\n_entry.id 16VP\n"))
    report_tsv = tmp_path / "report.tsv"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "foldnet.cli.main", "fetch", "source=pdb", "ids=[16vp,9zzz]", "format=cif",
           f"base_url={server.base}/download", f"cache_dir={tmp_path / 'cache'}", "backoff=0.01",
           f"report={report_tsv}"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    assert "1 fetched" in res.stdout and "1 failed" in res.stdout and "FAILED 9zzz" in res.stdout
    assert (tmp_path / "cache" / "mmcif" / "16vp.cif.gz").read_bytes() == (tmp_path / "16vp.cif.gz").read_bytes()
    rows = [r.split("\t") for r in report_tsv.read_text().splitlines()]
    assert [r[:2] for r in rows] == [["key", "status"], ["16vp", "fetched"], ["9zzz", "failed"]]
    assert not (tmp_path / "outputs").exists()  # hydra writes no run folder

    bad = subprocess.run(cmd[:5] + ["ids=[not_an_id]"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "not a PDB ID" in bad.stderr


def test_cli_compose_defaults():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="fetch", overrides=["source=cath_list", "name=names"])
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True)
    assert values["cache_dir"] == f"{os.environ['FOLDNET_DATA']}/downloads"
    fields = set(sources.FetchConfig.__dataclass_fields__)
    assert set(values) == fields  # every key of the YAML is a typed field and vice versa


# ----------------------------------------------------------------------------- servers that push back (issue 14)


def test_retry_after_is_honoured_and_bounded(server, data_root, tmp_path, monkeypatch):
    import time

    server.statuses = [(429, "1"), (503, "1")]
    t0 = time.perf_counter()
    info = fetch.download_with_info(f"{server.base}/cath_tools_testdata/1c0pA01", tmp_path / "a.pdb",
                                    retries=3, backoff=0.01, timeout=5)
    waited = time.perf_counter() - t0
    assert info.attempts == 3 and waited >= 1.9  # two 1 s waits the server asked for, not 10 ms backoffs
    assert info.path.read_bytes() == (data_root / "cath_tools_testdata" / "1c0pA01").read_bytes()
    monkeypatch.setattr(fetch, "MAX_RETRY_AFTER_S", 2.0)
    server.statuses = [(429, "3600")]
    t0 = time.perf_counter()
    with pytest.raises(fetch.DownloadError, match="retry after 3600 s"):
        fetch.download(f"{server.base}/cath_tools_testdata/1hdoA00", tmp_path / "b.pdb", retries=3, backoff=0.01)
    assert time.perf_counter() - t0 < 1.0 and len(server.requests) == 4


def test_retry_after_http_date():
    import email.utils
    import time

    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= fetch.retry_after_seconds({"Retry-After": when}) <= 31
    assert fetch.retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert fetch.retry_after_seconds({"Retry-After": "soon"}) is None and fetch.retry_after_seconds({}) is None


def test_stalled_server_times_out_with_a_clear_message(server, tmp_path):
    server.silent = True
    with pytest.raises(fetch.DownloadError, match=r"no (answer|data) from the server .*0.3 s"):
        fetch.download(f"{server.base}/cath_tools_testdata/1c0pA01", tmp_path / "x.pdb",
                       retries=1, backoff=0.01, timeout=0.3)
    assert not (tmp_path / "x.pdb").exists()


def test_server_and_user_names_stay_in_the_cache(server, data_root, tmp_path):
    with pytest.raises(ValueError, match="plain file name"):
        sources.fetch_pdnet(files=["../../evil.tar.gz"], base_url=server.base, cache_dir=tmp_path / "c")
    server.routes["/x/%2E%2E%2Fevil"] = data_root / "cath_tools_testdata" / "1c0pA01"
    report = sources.fetch_url(f"{server.base}/x/%2E%2E%2Fevil", cache_dir=tmp_path / "c", retries=0)
    assert report.ok, report.summary()
    (path,) = report.paths()
    assert (tmp_path / "c" / "url") in path.parents and path.name != "..%2Fevil" and "/" not in path.name
    with pytest.raises(ValueError, match="not a PDB ID"):
        sources.run_fetch(sources.FetchConfig(source="pdb", ids=["../../etc"], cache_dir=str(tmp_path / "c")))
