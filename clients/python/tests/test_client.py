"""The Python client against a real `llmem serve`.

The binary comes from the environment variable LLMEM_BIN (`cargo xtask test` sets it to
`<target>/debug/llmem`). Without it the tests fail: they never skip silently.
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from llmem_client import (
    AuthenticationError,
    BadRequestError,
    Client,
    KeyInfo,
    LlmemError,
    Memory,
    NewKey,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    UpstreamError,
)

START_TIMEOUT_S = 180.0


@dataclass
class Server:
    url: str  # as printed, ending in /v1
    data_dir: Path
    bin: str
    acme_key: str
    globex_key: str
    admin_key: str
    stderr_path: Path

    def client(self, key: Optional[str]) -> Client:
        return Client(self.url, api_key=key, timeout=60.0)


def _llmem_bin() -> str:
    path = os.environ.get("LLMEM_BIN", "").strip()
    if not path:
        pytest.fail(
            "LLMEM_BIN is not set: point it at the llmem binary "
            "(`cargo xtask test` sets it to <target>/debug/llmem; by hand: "
            "LLMEM_BIN=target/debug/llmem python -m pytest clients/python/tests)",
            pytrace=False,
        )
    resolved = shutil.which(path) or path
    if not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
        pytest.fail(f"LLMEM_BIN={path!r} is not an executable file", pytrace=False)
    return os.path.abspath(resolved)


def _add_key(bin_: str, data_dir: Path, tenant: str, admin: bool = False) -> str:
    args = [bin_, "keys", "add", "--tenant", tenant, "--dir", str(data_dir)]
    if admin:
        args.append("--admin")
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` failed ({out.returncode}):\n{out.stderr}", pytrace=False
        )
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        pytest.fail(
            f"`{' '.join(args)}` should print the key alone on one line, printed {out.stdout!r}",
            pytrace=False,
        )
    return lines[0].strip()


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    bin_ = _llmem_bin()
    # Calls to the loopback server must never go through a proxy of the environment.
    for var in ("NO_PROXY", "no_proxy"):
        os.environ[var] = ",".join(
            p for p in [os.environ.get(var, ""), "127.0.0.1", "localhost"] if p
        )
    root = tmp_path_factory.mktemp("llmem")
    data_dir = root / "data"
    data_dir.mkdir()
    acme = _add_key(bin_, data_dir, "acme")
    globex = _add_key(bin_, data_dir, "globex")
    admin = _add_key(bin_, data_dir, "ops", admin=True)
    assert len({acme, globex, admin}) == 3, "keys add printed the same key twice"

    stderr_path = root / "serve.stderr"
    stderr = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [bin_, "serve", "--dir", str(data_dir), "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:  # reads stdout to the end, so the server never blocks on it
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        try:
            first = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            first = None
            pytest.fail(
                f"llmem serve printed nothing within {START_TIMEOUT_S:g} s; stderr:\n"
                + _tail(stderr_path),
                pytrace=False,
            )
        if first is None:
            proc.wait(timeout=10)
            pytest.fail(
                f"llmem serve exited ({proc.returncode}) before listening; stderr:\n"
                + _tail(stderr_path),
                pytrace=False,
            )
        m = re.search(r"listening on (http://\S+?/v1)\b", first)
        if not m:
            pytest.fail(
                f"llmem serve's first stdout line names no address: {first!r}",
                pytrace=False,
            )
        url = m.group(1)
        srv = Server(url, data_dir, bin_, acme, globex, admin, stderr_path)
        probe = Client(url, timeout=5.0)
        deadline = time.monotonic() + 30
        while not probe.health():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "llmem serve does not answer GET /health; stderr:\n"
                    + _tail(stderr_path),
                    pytrace=False,
                )
            time.sleep(0.2)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        stderr.close()


@pytest.fixture
def acme(server: Server) -> Client:
    return server.client(server.acme_key)


@pytest.fixture
def globex(server: Server) -> Client:
    return server.client(server.globex_key)


@pytest.fixture
def admin(server: Server) -> Client:
    return server.client(server.admin_key)


@pytest.fixture
def user() -> str:
    """A user id of its own for each test, so that tests never see each other's memories."""
    return "u-" + uuid.uuid4().hex[:12]


def texts(memories: List[Memory]) -> List[str]:
    return [m.memory for m in memories]


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$"
)


def rfc3339(s: Optional[str]) -> float:
    """Seconds since the epoch of an RFC 3339 time (any number of fraction digits)."""
    m = _RFC3339.match(s or "")
    assert m, f"not an RFC 3339 time: {s!r}"
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    zone = m.group(8)
    tz = datetime.timezone.utc
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    t = datetime.datetime(y, mo, d, h, mi, sec, tzinfo=tz).timestamp()
    return t + float(m.group(7) or 0)


def assert_oldest_first(memories: List[Memory]) -> None:
    times = [rfc3339(m.created_at) for m in memories]
    assert times == sorted(times), [m.created_at for m in memories]


# -- memories --------------------------------------------------------------------------------


def test_health(server: Server) -> None:
    assert Client(server.url).health() is True
    assert server.client("not-a-key").health() is True  # /health needs no key


def test_round_trip(acme: Client, user: str) -> None:
    added = acme.add(
        "Alice is allergic to peanuts",
        user_id=user,
        metadata={"topic": "food", "n": 1},
        kind="knowledge",
    )
    assert len(added) == 1
    mem = added[0]
    assert isinstance(mem, Memory)
    assert mem.id
    assert mem.memory == "Alice is allergic to peanuts"
    assert mem.event == "ADD"
    assert mem.user_id == user
    assert mem.kind == "knowledge"
    assert mem.metadata == {"topic": "food", "n": 1}
    assert mem.created_at

    got = acme.get(mem.id, user_id=user)
    assert (got.id, got.memory, got.metadata) == (mem.id, mem.memory, mem.metadata)
    assert got.score is None

    time.sleep(0.01)  # a later millisecond: "oldest first" must put the first add first

    # one memory per non-empty message
    from_messages = acme.add(
        messages=[
            {"role": "user", "content": "I moved to Lisbon last spring"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "Lisbon is lovely in spring"},
        ],
        user_id=user,
    )
    assert texts(from_messages) == [
        "I moved to Lisbon last spring",
        "Lisbon is lovely in spring",
    ]
    assert all(m.event == "ADD" for m in from_messages)

    listed = acme.list(user_id=user)
    assert texts(listed)[0] == "Alice is allergic to peanuts", "list answers oldest first"
    assert sorted(texts(listed)[1:]) == [
        "I moved to Lisbon last spring",
        "Lisbon is lovely in spring",
    ]
    assert_oldest_first(listed)
    assert texts(acme.list(user_id=user, limit=2)) == texts(listed)[:2]

    found = acme.search("which food is Alice allergic to? peanuts", user_id=user)
    assert found, "search found nothing"
    assert found[0].id == mem.id
    scores = [m.score for m in found]
    assert all(isinstance(s, float) for s in scores), scores
    assert scores == sorted(scores, reverse=True), "search answers best first"  # type: ignore[type-var]
    assert len(acme.search("Lisbon", user_id=user, limit=1)) == 1

    updated = acme.update(
        mem.id, "Alice is allergic to peanuts and cashews", user_id=user, metadata={"topic": "health"}
    )
    assert updated.id == mem.id
    assert updated.event == "UPDATE"
    assert updated.memory == "Alice is allergic to peanuts and cashews"
    assert updated.metadata == {"topic": "health"}
    again = acme.get(mem.id, user_id=user)
    assert again.memory == "Alice is allergic to peanuts and cashews"
    assert again.metadata == {"topic": "health"}
    assert again.updated_at

    acme.delete(mem.id, user_id=user)
    with pytest.raises(NotFoundError) as e:
        acme.get(mem.id, user_id=user)
    assert e.value.status == 404 and e.value.type == "not_found_error"
    with pytest.raises(NotFoundError):
        acme.delete(mem.id, user_id=user)
    with pytest.raises(NotFoundError):
        acme.update(mem.id, "too late", user_id=user)
    assert sorted(texts(acme.list(user_id=user))) == [
        "I moved to Lisbon last spring",
        "Lisbon is lovely in spring",
    ]

    assert acme.delete_all(user_id=user) == 2
    assert acme.list(user_id=user) == []
    assert acme.delete_all(user_id=user) == 0


def test_list_is_oldest_first(acme: Client, user: str) -> None:
    for i in range(5):
        acme.add(f"memory number {i}", user_id=user, metadata={"i": i})
        time.sleep(0.005)  # each in a millisecond of its own
    listed = acme.list(user_id=user)
    assert texts(listed) == [f"memory number {i}" for i in range(5)]
    assert_oldest_first(listed)
    assert texts(acme.list(user_id=user, limit=3)) == texts(listed)[:3]
    assert texts(acme.list(user_id=user, filter={"i": {"$nin": [0, 2]}})) == [
        "memory number 1",
        "memory number 3",
        "memory number 4",
    ]
    acme.delete_all(user_id=user)


def test_users_inside_a_tenant_are_apart(acme: Client, user: str) -> None:
    other = user + "-b"
    m = acme.add("the boat is called Nautilus", user_id=user)[0]
    assert acme.list(user_id=other) == []
    with pytest.raises(NotFoundError):
        acme.get(m.id, user_id=other)
    assert "the boat is called Nautilus" not in texts(acme.search("Nautilus boat", user_id=other))
    acme.delete_all(user_id=user)


def test_filters(acme: Client, user: str) -> None:
    acme.add("pizza on fridays", user_id=user, metadata={"topic": "food", "n": 1})
    acme.add("sushi on birthdays", user_id=user, metadata={"topic": "food", "n": 2})
    acme.add("runs every morning", user_id=user, metadata={"topic": "sport", "n": 3})
    acme.add("no metadata here", user_id=user)

    def listed(f: Dict[str, Any]) -> List[str]:
        return sorted(texts(acme.list(user_id=user, filter=f)))

    assert listed({"topic": "food"}) == ["pizza on fridays", "sushi on birthdays"]
    assert listed({"topic": {"$eq": "food"}}) == ["pizza on fridays", "sushi on birthdays"]
    assert listed({"topic": {"$ne": "food"}}) == ["no metadata here", "runs every morning"]
    assert listed({"n": {"$gte": 2}}) == ["runs every morning", "sushi on birthdays"]
    assert listed({"n": {"$gt": 2}}) == ["runs every morning"]
    assert listed({"n": {"$lte": 2}}) == ["pizza on fridays", "sushi on birthdays"]
    assert listed({"topic": {"$in": ["sport"]}}) == ["runs every morning"]
    assert listed({"$or": [{"n": 1}, {"topic": "sport"}]}) == [
        "pizza on fridays",
        "runs every morning",
    ]
    assert listed({"$and": [{"topic": "food"}, {"n": {"$lt": 2}}]}) == ["pizza on fridays"]
    assert listed({"topic": "nothing"}) == []

    # the query names all three: the filter alone keeps the sport one out
    query = "pizza fridays sushi birthdays runs morning"
    assert "runs every morning" in texts(acme.search(query, user_id=user))
    found = acme.search(query, user_id=user, filter={"topic": "food"})
    assert found, "a filtered search found nothing"
    assert set(texts(found)) <= {"pizza on fridays", "sushi on birthdays"}, texts(found)
    found = acme.search("morning exercise", user_id=user, filter={"topic": "sport"})
    assert texts(found) == ["runs every morning"]

    assert acme.delete_all(user_id=user, filter={"topic": "food"}) == 2
    assert sorted(texts(acme.list(user_id=user))) == ["no metadata here", "runs every morning"]
    acme.delete_all(user_id=user)


def test_unknown_filter_operator_is_a_bad_request(acme: Client, user: str) -> None:
    acme.add("something to filter", user_id=user, metadata={"n": 1})
    for call in (
        lambda: acme.list(user_id=user, filter={"n": {"$regex": "x"}}),
        lambda: acme.search("something", user_id=user, filter={"n": {"$regex": "x"}}),
        lambda: acme.delete_all(user_id=user, filter={"n": {"$regex": "x"}}),
    ):
        with pytest.raises(BadRequestError) as e:
            call()
        assert e.value.status == 400
        assert "$regex" in e.value.message, e.value.message
    assert texts(acme.list(user_id=user)) == ["something to filter"]
    acme.delete_all(user_id=user)


def test_bad_input_is_a_bad_request(acme: Client, user: str) -> None:
    with pytest.raises(BadRequestError):
        acme.add("x", user_id=user, kind="no-such-kind")
    with pytest.raises(BadRequestError):
        acme.add("x", user_id="a/b")  # `/` separates a tenant from its users
    with pytest.raises(ValueError):
        acme.add()  # neither text nor messages: refused before any request
    with pytest.raises(BadRequestError) as e:
        acme.add("x" * (64 * 1024 + 1), user_id=user)
    assert e.value.status == 400
    with pytest.raises(BadRequestError):
        acme.search("   ", user_id=user)


def test_a_body_over_8_mib_is_413(acme: Client, user: str) -> None:
    with pytest.raises(BadRequestError) as e:
        acme.add("x" * (9 << 20), user_id=user)
    assert e.value.status == 413
    assert acme.list(user_id=user) == []


def test_chat_without_upstream_is_unavailable(server: Server) -> None:
    c = server.client(server.acme_key)
    with pytest.raises(UnavailableError) as e:
        c._request(  # the client has no chat method: its plumbing maps the answer
            "POST",
            "/v1/chat/completions",
            body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert e.value.status == 503
    assert "upstream" in e.value.message


# -- tenants ---------------------------------------------------------------------------------


def test_a_tenant_cannot_reach_another_tenants_memories(
    acme: Client, globex: Client, user: str
) -> None:
    secret = "acme's launch code is 0451-zebra"
    mem = acme.add(secret, user_id=user, metadata={"topic": "secret"})[0]
    plain = acme.add("acme keeps notes without a user " + user)[0]

    for who in (user, None):
        for target in (mem, plain):
            with pytest.raises(NotFoundError):
                globex.get(target.id, user_id=who)
            with pytest.raises(NotFoundError):
                globex.update(target.id, "overwritten by globex", user_id=who)
            with pytest.raises(NotFoundError):
                globex.delete(target.id, user_id=who)
        for q in ("launch code 0451-zebra", secret, "acme keeps notes"):
            seen = texts(globex.search(q, user_id=who, limit=50))
            assert secret not in seen and plain.memory not in seen, seen
        seen = texts(globex.list(user_id=who))
        assert secret not in seen and plain.memory not in seen
        seen = texts(globex.list(user_id=who, filter={"topic": "secret"}))
        assert secret not in seen

    # globex's delete_all with a matching filter leaves acme's memory alone
    globex.delete_all(user_id=user, filter={"topic": "secret"})
    globex.delete_all(user_id=user)

    assert acme.get(mem.id, user_id=user).memory == secret
    assert acme.get(plain.id).memory == plain.memory
    acme.delete_all(user_id=user)
    acme.delete(plain.id)


# -- auth ------------------------------------------------------------------------------------


def test_no_key_or_a_wrong_key_is_refused(server: Server, user: str) -> None:
    for key in (None, "", "llmem-sk-" + "0" * 48, "wrong"):
        c = server.client(key)
        with pytest.raises(AuthenticationError) as e:
            c.list(user_id=user)
        assert e.value.status == 401
        assert e.value.type == "authentication_error"
        with pytest.raises(AuthenticationError):
            c.add("should not be stored", user_id=user)
        with pytest.raises(AuthenticationError):
            c.list_keys()


def test_a_non_admin_key_cannot_manage_keys(acme: Client) -> None:
    with pytest.raises(PermissionDeniedError) as e:
        acme.create_key("acme", admin=True)
    assert e.value.status == 403
    assert e.value.type == "permission_error"
    with pytest.raises(PermissionDeniedError):
        acme.list_keys()
    with pytest.raises(PermissionDeniedError):
        acme.revoke_key("anything")


def test_an_admin_key_creates_working_keys(server: Server, admin: Client, acme: Client, user: str) -> None:
    new = admin.create_key("initech")
    assert isinstance(new, NewKey)
    assert new.tenant == "initech" and new.admin is False
    assert new.id and new.key and new.key != new.id
    assert new.key not in repr(new), "the secret must not show in repr"

    initech = server.client(new.key)
    m = initech.add("initech's stapler is red", user_id=user)[0]
    assert initech.get(m.id, user_id=user).memory == "initech's stapler is red"
    with pytest.raises(NotFoundError):
        acme.get(m.id, user_id=user)

    # a second key of an existing tenant reaches that tenant's memories
    acme2 = server.client(admin.create_key("acme").key)
    a = acme.add("shared inside acme", user_id=user)[0]
    assert acme2.get(a.id, user_id=user).memory == "shared inside acme"

    keys = admin.list_keys()
    assert all(isinstance(k, KeyInfo) for k in keys)
    by_id = {k.id: k for k in keys}
    assert by_id[new.id].tenant == "initech" and not by_id[new.id].revoked
    assert {"acme", "globex", "ops", "initech"} <= {k.tenant for k in keys}
    assert any(k.admin and k.tenant == "ops" for k in keys)
    listing = json.dumps([k.__dict__ for k in keys])
    for secret in (new.key, server.acme_key, server.admin_key):
        assert secret not in listing

    initech.delete_all(user_id=user)
    acme.delete_all(user_id=user)


def test_an_admin_created_admin_key_is_admin(server: Server, admin: Client) -> None:
    new = admin.create_key("ops2", admin=True)
    assert new.admin is True
    assert any(k.id == new.id for k in server.client(new.key).list_keys())


def test_a_revoked_key_is_refused(server: Server, admin: Client, user: str) -> None:
    new = admin.create_key("umbrella")
    c = server.client(new.key)
    c.add("umbrella's memory", user_id=user)
    admin.revoke_key(new.id)
    with pytest.raises(AuthenticationError) as e:
        c.list(user_id=user)
    assert e.value.status == 401
    with pytest.raises(AuthenticationError):
        c.add("after revocation", user_id=user)
    listed = {k.id: k for k in admin.list_keys()}
    assert listed[new.id].revoked, listed[new.id]


def test_a_key_revoked_with_the_cli_is_refused(server: Server, admin: Client, user: str) -> None:
    new = admin.create_key("hooli")
    c = server.client(new.key)
    assert c.list(user_id=user) == []
    out = subprocess.run(
        [server.bin, "keys", "revoke", new.id, "--dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # the server re-reads the keys file when it changes, at most once a second
    deadline = time.monotonic() + 5
    while True:
        try:
            c.list(user_id=user)
        except AuthenticationError:
            break
        assert time.monotonic() < deadline, "the running server still accepts the key 5 s after `keys revoke`"
        time.sleep(0.1)


def test_keys_cli_lists_keys_without_secrets(server: Server) -> None:
    out = subprocess.run(
        [server.bin, "keys", "list", "--dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for tenant in ("acme", "globex", "ops"):
        assert tenant in out.stdout
    for secret in (server.acme_key, server.globex_key, server.admin_key):
        assert secret not in out.stdout and secret not in out.stderr
    keys_file = server.data_dir / "keys.json"
    if keys_file.exists():
        stored = keys_file.read_text()
        for secret in (server.acme_key, server.globex_key, server.admin_key):
            assert secret not in stored, "keys.json must keep hashes only"


# -- the client on its own ---------------------------------------------------------------------


def test_base_url_with_or_without_v1(server: Server, user: str) -> None:
    root = server.url[: -len("/v1")]
    for base in (server.url, server.url + "/", root, root + "/"):
        c = Client(base, api_key=server.acme_key)
        assert c.base_url == root
        assert c.list(user_id=user) == []
    with pytest.raises(ValueError):
        Client("127.0.0.1:8787")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_status_0() -> None:
    c = Client(f"http://127.0.0.1:{_free_port()}", api_key="k", timeout=5)
    with pytest.raises(LlmemError) as e:
        c.list()
    assert type(e.value) is LlmemError
    assert e.value.status == 0
    assert "could not reach" in e.value.message
    assert c.health() is False


class _Canned(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status, headers and body its server carries."""

    def _answer(self) -> None:
        status, headers, body = self.server.canned  # type: ignore[attr-defined]
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[http.server.HTTPServer]:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Canned)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _error_body(status: int, type_: str, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": status}}).encode()


@pytest.mark.parametrize(
    "status,cls",
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (413, BadRequestError),
        (422, BadRequestError),
        (502, UpstreamError),
        (503, UnavailableError),
        (500, LlmemError),
    ],
)
def test_statuses_map_to_error_classes(
    canned: http.server.HTTPServer, status: int, cls: type
) -> None:
    canned.canned = (status, {"Content-Type": "application/json"}, _error_body(status, "some_error", "what went wrong"))  # type: ignore[attr-defined]
    c = Client(f"http://127.0.0.1:{canned.server_address[1]}/v1", api_key="k")
    with pytest.raises(LlmemError) as e:
        c.get("m1")
    assert type(e.value) is cls
    assert (e.value.status, e.value.type, e.value.message) == (status, "some_error", "what went wrong")


def test_503_carries_retry_after(canned: http.server.HTTPServer) -> None:
    c = Client(f"http://127.0.0.1:{canned.server_address[1]}", api_key="k")
    canned.canned = (503, {"Retry-After": "7"}, _error_body(503, "overloaded_error", "busy"))  # type: ignore[attr-defined]
    with pytest.raises(UnavailableError) as e:
        c.search("q")
    assert e.value.retry_after == 7.0
    canned.canned = (503, {}, b"plain text, not JSON")  # type: ignore[attr-defined]
    with pytest.raises(UnavailableError) as e:
        c.search("q")
    assert e.value.retry_after is None
    assert e.value.message == "plain text, not JSON"


def test_memory_from_json() -> None:
    m = Memory.from_json(
        {
            "id": "m1",
            "memory": "hello",
            "kind": "knowledge",
            "metadata": {"a": 1},
            "created_at": "2025-01-01T00:00:00Z",
            "score": 1,
            "unknown": "ignored",
        }
    )
    assert m == Memory(
        id="m1", memory="hello", kind="knowledge", metadata={"a": 1},
        created_at="2025-01-01T00:00:00Z", score=1.0,
    )
    assert m.user_id is None and m.event is None and m.text == "hello"
    assert isinstance(m.score, float)
    with pytest.raises(Exception):
        m.memory = "changed"  # type: ignore[misc]
    hash(m)  # frozen and hashable despite its metadata dict
