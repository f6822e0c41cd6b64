import asyncio

from federation.runtime.stopping import stop_task


async def test_a_task_that_swallows_one_cancellation_still_stops() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= 3:
                    raise  # like a library that eats a cancel inside its close path

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    assert await stop_task(task, within=5)
    assert task.cancelled()
    assert swallowed == 3


async def test_a_task_that_never_stops_is_reported_not_awaited_forever() -> None:
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(immortal(), name="immortal")
    await asyncio.sleep(0)
    assert not await stop_task(task, within=0.5)
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)


async def test_a_loop_checking_for_cancellation_stops_after_one_swallowed_cancel() -> None:
    from federation.runtime.stopping import raise_if_cancelling

    async def swallowing_call() -> None:  # like wait_for racing its timeout on Python 3.11
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return

    async def loop() -> None:
        while True:
            raise_if_cancelling()
            await swallowing_call()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    task.cancel()  # exactly one cancel, as a TaskGroup delivers
    await asyncio.wait({task}, timeout=2)
    assert task.cancelled()
