"""``TcpStream.receive_until``: idle waits parked in the run's hub (pushsdk._idle), and the
ordinary wait it falls back to where there is no epoll. Socket pairs; trio's MockClock with
autojump, so deadlines are exact."""
import socket

import pytest
import trio
import trio.testing

from pushsdk import _idle
from pushsdk.tcp import TcpStream

pytestmark = pytest.mark.parametrize("hub", [True, False], ids=["hub", "no-epoll"])


@pytest.fixture(autouse=True)
def _hub_or_not(hub, monkeypatch):
    if not hub:
        monkeypatch.setattr(_idle, "AVAILABLE", False)


def _pair() -> tuple[TcpStream, TcpStream]:
    a, b = socket.socketpair()
    return TcpStream(a), TcpStream(b)


async def test_data_that_is_there_comes_at_once_and_data_that_comes_wakes_it(autojump_clock):
    a, b = _pair()
    await b.send_all(b"ready")
    assert await a.receive_until(100, trio.current_time() + 10) == b"ready"
    async with trio.open_nursery() as nursery:
        got = []

        async def receive():
            got.append((await a.receive_until(100, trio.current_time() + 10),
                        trio.current_time()))
        nursery.start_soon(receive)
        await trio.sleep(3)
        await b.send_all(b"later")
    assert got[0][0] == b"later" and got[0][1] < 3.1


async def test_none_exactly_at_the_deadline_then_it_waits_again(autojump_clock):
    a, b = _pair()
    start = trio.current_time()
    assert await a.receive_until(100, start + 42.5) is None
    assert trio.current_time() - start == pytest.approx(42.5)
    await b.send_all(b"x")
    assert await a.receive_until(100, trio.current_time() + 1) == b"x"


async def test_interrupt_ends_the_wait_with_none_and_is_harmless_otherwise(autojump_clock):
    a, _b = _pair()
    a.interrupt()  # nothing under way: nothing happens
    got = []
    async with trio.open_nursery() as nursery:
        async def receive():
            got.append((await a.receive_until(100, trio.current_time() + 1000),
                        trio.current_time()))
        nursery.start_soon(receive)
        await trio.sleep(7)
        a.interrupt()
    assert got[0][0] is None and got[0][1] == pytest.approx(7, abs=0.01)


async def test_close_from_another_task_raises_closed_in_the_waiter(autojump_clock):
    a, _b = _pair()
    raised = []

    async def receive():
        try:
            await a.receive_until(100, trio.current_time() + 1000)
        except trio.ClosedResourceError as exc:
            raised.append(exc)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.sleep(1)
        a.close()
    assert len(raised) == 1


async def test_a_cancelled_wait_leaves_nothing_behind(autojump_clock):
    a, b = _pair()
    with trio.move_on_after(5):
        await a.receive_until(100, trio.current_time() + 1000)
    await b.send_all(b"after")
    assert await a.receive_until(100, trio.current_time() + 10) == b"after"
    b.close()
    assert await a.receive_until(100, trio.current_time() + 10) == b""  # EOF


async def test_many_waits_each_end_at_their_own_deadline_or_data(autojump_clock):
    pairs = [_pair() for _ in range(60)]
    start = trio.current_time()
    ended: dict[int, tuple[bytes | None, float]] = {}

    async def receive(i, stream):
        data = await stream.receive_until(100, start + 10 + i)
        ended[i] = (data, trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for i, (a, _b) in enumerate(pairs):
            nursery.start_soon(receive, i, a)
        await trio.sleep(25.5)
        for i, (_a, b) in enumerate(pairs):
            if i % 2:
                await b.send_all(b"%d" % i)
    for i in range(60):
        data, at = ended[i]
        if 10 + i <= 25.5 or i % 2 == 0:  # its deadline came first
            assert data is None and at == pytest.approx(10 + i), i
        else:
            assert data == b"%d" % i and at == pytest.approx(25.5, abs=0.01), i


async def test_two_receivers_on_one_stream_is_an_error(autojump_clock):
    a, _b = _pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.receive_until, 100, trio.current_time() + 10)
        await trio.sleep(1)
        with pytest.raises(trio.BusyResourceError):
            await a.receive_until(100, trio.current_time() + 10)
        nursery.cancel_scope.cancel()


async def test_ended_waits_leave_few_timer_entries_behind(hub, autojump_clock):
    """Every wait pushes a deadline; those of waits that ended (here: data came) are swept
    once they pass a quarter of the live ones, so an idle connection keeps about one.
    Without epoll no hub is started at all."""
    pairs = [_pair() for _ in range(200)]
    most = 0
    async with trio.open_nursery() as nursery:
        async def idle(stream: TcpStream) -> None:
            # Each wait's deadline is earlier than the last one's, so the entries of the
            # waits that ended stay below the heap's top (the hub skips stale entries at
            # the top as it goes; these only a sweep removes).
            deadline = trio.current_time() + 1000
            while await stream.receive_until(100, deadline) is not None:
                deadline -= 1  # data came: wait again, with a new deadline entry

        for a, _ in pairs:
            nursery.start_soon(idle, a)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(10):
            for _, b in pairs:
                await b.send_all(b"x")
            await trio.testing.wait_all_tasks_blocked()
            started = _idle._HUB.get()
            if started is not None:
                most = max(most, len(started._timers))
        nursery.cancel_scope.cancel()
        assert (_idle._HUB.get() is not None) is hub
    assert most <= 200 * 5 // 4 + 64 + 1
