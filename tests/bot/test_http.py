"""The app's HTTP server, over real sockets: a connection that stalls in its headers or
its body is closed, as a reverse proxy would close it, where it held a file descriptor
for an hour (headers) or for good (body)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.http import HttpServer

LIMIT = 0.5  # seconds, for the headers and for the body


async def _echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    http = HttpServer("127.0.0.1", 0, headers_seconds=LIMIT, body_seconds=LIMIT)
    http.add_post("/echo", _echo, "echo")
    await http.start()
    try:
        yield http
    finally:
        await http.stop()


async def _sent(server: HttpServer, data: bytes) -> tuple[bytes, float]:
    """What the server answers to ``data`` before it closes the connection, and after
    how many seconds it closed it (at most four times the limit: the test's own)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    began = loop.time()
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 4 * LIMIT)
        return answer, loop.time() - began
    finally:
        writer.close()


async def test_a_connection_that_sends_half_its_headers_is_closed(server: HttpServer) -> None:
    answer, after = await _sent(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le")
    assert answer == b"" and after < 2 * LIMIT


async def test_a_connection_that_sends_nothing_is_closed(server: HttpServer) -> None:
    answer, after = await _sent(server, b"")
    assert answer == b"" and after < 2 * LIMIT


async def test_a_request_whose_body_stalls_gets_408_and_is_closed(server: HttpServer) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    answer, after = await _sent(server, head + b'{"client": ')
    assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer
    assert after < 2 * LIMIT


async def test_a_request_whose_body_stalls_is_audited_as_refused() -> None:
    """A 408 was logged only, where a body too large (413) is audited under the
    endpoint's owner: a flood of stalled bodies went unseen in the audit log."""
    refusals: list[tuple[str, str, dict[str, str]]] = []

    def refused(owner: str, reason: str, details: dict[str, str]) -> None:
        refusals.append((owner, reason, details))

    http = HttpServer("127.0.0.1", 0, body_seconds=LIMIT, refused=refused)
    http.add_post("/echo", _echo, "echo")
    await http.start()
    try:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        answer, _ = await _sent(http, head + b'{"client": ')
    finally:
        await http.stop()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert refusals == [
        ("echo", "request body not all sent within 0.5 s", {"path": "/echo", "remote": "127.0.0.1"})
    ]


async def test_a_request_that_comes_in_time_is_answered_and_kept_alive(
    server: HttpServer,
) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        for body in (b"one", b"two"):  # on the same connection
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n" + body)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 4 * LIMIT)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert await reader.readexactly(3) == body
    finally:
        writer.close()


async def test_a_connection_over_the_most_is_answered_503_and_closed_at_once() -> None:
    """Each slow connection was held for up to the limit, and nothing bounded how many:
    a flood of them used up the file descriptors. Over the most, one is refused at
    once; once one of those held closes, a new one is served."""
    held_for = 10.0  # the server's own limits, longer than the test
    http = HttpServer("127.0.0.1", 0, held_for, held_for, most_connections=3)
    http.add_post("/echo", _echo, "echo")
    await http.start()
    held = [await asyncio.open_connection(http.host, http.port) for _ in range(3)]
    try:
        await asyncio.sleep(0.05)  # each taken by the server, sending nothing
        for _ in range(5):  # refused for as long as the three are open
            answer, after = await _sent(http, b"POST /echo HTTP/1.1\r\nHost: x\r\n")
            assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 10" in answer
            assert after < LIMIT
        held.pop()[1].close()
        await asyncio.sleep(0.05)
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n"
        answer, _ = await _sent(http, head + b"\r\nhi")
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"hi")
    finally:
        for _, writer in held:
            writer.close()
        await http.stop()


async def test_connections_that_come_at_once_are_held_no_more_than_the_most() -> None:
    """Those accepted at one moment were all handed to the server before any was counted
    in its list: 50 at once against a most of 3 held 50."""
    held_for = 10.0
    http = HttpServer("127.0.0.1", 0, held_for, held_for, most_connections=3)
    await http.start()
    opened = [(http.host, http.port)] * 50
    connections = await asyncio.gather(*(asyncio.open_connection(*at) for at in opened))
    try:

        async def refused(reader: asyncio.StreamReader) -> bool:
            try:
                return (await asyncio.wait_for(reader.read(), LIMIT)).startswith(b"HTTP/1.1 503 ")
            except TimeoutError:
                return False

        answers = await asyncio.gather(*(refused(reader) for reader, _ in connections))
        assert answers.count(False) == 3
    finally:
        for _, writer in connections:
            writer.close()
        await http.stop()
