"""`meshlet image import|ls|inspect|rm` as a user runs them."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import lone_server, meshlet
from tests.images import busybox_rootfs

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with lone_server(tmp_path) as addr:
        yield addr


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return busybox_rootfs(tmp_path / "rootfs.tar")


def test_import_ls_inspect_rm(server: str, rootfs: Path, tmp_path: Path) -> None:
    data = str(tmp_path / "agent")
    run = lambda *a, **kw: meshlet("--addr", server, *a, "--data-dir", data,
                                   home=tmp_path, **kw)
    packed = tmp_path / "rootfs.tar.gz"
    packed.write_bytes(gzip.compress(rootfs.read_bytes()))
    image_id = run("image", "import", str(packed), "--name", "busybox:1.36",
                   "-c", 'CMD ["httpd", "-f", "-p", "8080"]', "--change", "EXPOSE 8080",
                   "-c", "ENV GREETING=hello").stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    rows = [line.split() for line in run("image", "ls").stdout.splitlines()]
    assert rows[0] == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert rows[1][:3] == ["busybox", "1.36", image_id[7:19]]
    [shown] = json.loads(run("image", "inspect", "busybox:1.36").stdout)
    assert shown["Id"] == image_id and shown["RepoTags"] == ["busybox:1.36"]
    assert shown["Config"]["Cmd"] == ["httpd", "-f", "-p", "8080"]
    assert shown["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert shown["Config"]["Env"] == ["GREETING=hello"]
    assert shown["RootFS"]["Type"] == "layers" and len(shown["RootFS"]["Layers"]) == 1
    listed = json.loads(run("-o", "json", "image", "ls").stdout)
    assert [i["Id"] for i in listed] == [image_id]
    assert run("image", "ls", "-o", "json").stdout == run("-o", "json", "image", "ls").stdout
    for args, words in [
            (("image", "import", str(rootfs), "--name", "Busybox"), "is not valid"),
            (("image", "import", str(rootfs), "--name", "x", "-c", "RUN ls"),
             "RUN is not accepted"),
            (("image", "import", str(tmp_path / "nothing.tar"), "--name", "x"),
             "cannot read"),
            (("image", "inspect", "nothing"), "no image named 'nothing'"),
            (("image", "rm", "nothing"), "no image named 'nothing'")]:
        bad = run(*args, check=False)
        assert bad.returncode != 0 and words in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2
    assert json.loads(run("-o", "json", "image", "ls").stdout) == listed  # nothing changed
    removed = run("image", "rm", "busybox:1.36").stdout.splitlines()
    assert removed[:2] == ["Untagged: busybox:1.36", f"Deleted: {image_id}"]
    assert run("image", "ls").stdout.splitlines()[1:] == []
    store = tmp_path / "agent" / "images"
    assert list((store / "blobs" / "sha256").iterdir()) == []


class _Containers(BaseHTTPRequestHandler):
    """An API that answers only GET /v1/containers, with records that name images
    (the fields the container runtime adds)."""

    records: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        body = json.dumps(self.records).encode()
        self.send_response(200 if self.path.startswith("/v1/containers") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Meshlet-Index", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def containers_api() -> Iterator[tuple[str, type[_Containers]]]:
    handler = type("Handler", (_Containers,), {"records": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_rm_is_refused_while_a_container_uses_the_image(
        containers_api: tuple[str, type[_Containers]], rootfs: Path, tmp_path: Path) -> None:
    addr, handler = containers_api
    data = str(tmp_path / "agent")
    run = lambda *a, **kw: meshlet("--addr", addr, *a, "--data-dir", data,
                                   home=tmp_path, **kw)
    image_id = run("image", "import", str(rootfs), "--name", "web").stdout.strip()
    handler.records = [{"name": "web-1", "image": "web", "image_id": image_id},
                       {"name": "db", "image_id": "sha256:" + "0" * 64}, {"name": "old"}]
    refused = run("image", "rm", "web", check=False)
    assert refused.returncode == 1
    assert "image web:latest is used by container web-1" in refused.stderr
    assert [i["Id"] for i in json.loads(run("-o", "json", "image", "ls").stdout)] == [
        image_id]
    handler.records = [{"name": "old"}]
    assert run("image", "rm", image_id[7:19]).stdout.splitlines()[0] == \
        "Untagged: web:latest"
