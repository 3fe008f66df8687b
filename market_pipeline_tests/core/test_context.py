"""The core context (core/context.py): bound by a block, restored after it, seen by the threads that
carry it and by no other binding."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from market_pipeline.core import context
from market_pipeline.core.lake import parquet_io, storage
from market_pipeline.core.security import crypto

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # 32 bytes, base64


def test_a_binding_ends_with_its_block_even_on_error(monkeypatch):
    monkeypatch.delenv(crypto.MASTER_KEY_ENV, raising=False)
    assert context.current() == context.CoreContext()
    with pytest.raises(RuntimeError), context.using(context.CoreContext(master_key=KEY, lake_encrypted=True)):
        assert parquet_io.lake_encrypted() and crypto.default_master_key() == bytes(range(32))
        with context.using_changes(lake_encrypted=False):
            assert not parquet_io.lake_encrypted() and crypto.default_master_key() == bytes(range(32))
        assert parquet_io.lake_encrypted()
        raise RuntimeError
    assert not parquet_io.lake_encrypted() and not storage.remote_lake_in_use()
    with pytest.raises(crypto.MasterKeyError, match="PIPELINE_MASTER_KEY is not set"):
        crypto.default_master_key()


def test_the_master_key_is_not_in_the_context_repr():
    assert KEY not in repr(context.CoreContext(master_key=KEY))


def test_a_thread_sees_the_context_it_was_given_and_no_other():
    """Two bindings side by side (a sensor beside a step) never see each other's; a pool's task runs
    in the context of whoever submitted it."""
    seen: dict[str, bool] = {}
    both_bound = threading.Barrier(2)

    def step(name: str, encrypted: bool) -> None:
        with context.using(context.CoreContext(lake_encrypted=encrypted)):
            both_bound.wait(5)
            seen[name] = parquet_io.lake_encrypted()

    threads = [threading.Thread(target=step, args=(n, e)) for n, e in (("plain", False), ("secret", True))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"plain": False, "secret": True}

    with ThreadPoolExecutor(1) as pool:
        with context.using(context.CoreContext(remote_lake=True)):
            carried = pool.submit(contextvars.copy_context().run, storage.remote_lake_in_use)
        assert pool.submit(storage.remote_lake_in_use).result() is False  # not copied: the defaults
        assert carried.result() is True


def test_an_iterator_handed_out_of_its_binding_makes_each_item_in_it():
    def items():
        for _ in range(2):
            yield parquet_io.lake_encrypted()

    bound = context.bound_iterator(context.CoreContext(lake_encrypted=True), items())
    assert list(bound) == [True, True] and not parquet_io.lake_encrypted()
