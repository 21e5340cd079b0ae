"""Configuration: typed, fail-fast, and every error names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, load_config, worker_count


def test_defaults_are_the_embedded_single_process() -> None:
    config = load_config(environ={})
    assert config.database_url is None and config.redis_url is None
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert worker_count(config) == 1


def test_environment_booleans_lists_and_limits() -> None:
    config = load_config(environ={
        "HEARTH_LOADTEST_PROVISIONING": "1", "HEARTH_STARTER_COMMUNITY": "no",
        "HEARTH_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "HEARTH_LIMIT_MAX_MESSAGE_CHARS": "2000", "HEARTH_PORT": "9000"})
    assert config.loadtest_provisioning is True and config.starter_community is False
    assert config.allowed_origins == ["https://a.example", "https://b.example"]
    assert config.limits.max_message_chars == 2000 and config.port == 9000


def test_voice_mix_threshold() -> None:
    """Unset: voice rooms never mix; set: read as a number."""
    assert load_config(environ={}).voice_mix_listeners_above is None
    config = load_config(environ={"HEARTH_VOICE_MIX_LISTENERS_ABOVE": "10"})
    assert config.voice_mix_listeners_above == 10


@pytest.mark.parametrize(("environ", "names"), [
    ({"HEARTH_PORT": "seventy"}, "HEARTH_PORT"),
    ({"HEARTH_PORT": "70000"}, "HEARTH_PORT"),
    ({"HEARTH_LOADTEST_PROVISIONING": "maybe"}, "HEARTH_LOADTEST_PROVISIONING"),
    ({"HEARTH_DATABASE_URL": "postgresql://x/y"}, "HEARTH_SECRET"),
    ({"HEARTH_WORKERS": "4"}, "HEARTH_REDIS_URL"),
    ({"HEARTH_SECRET": "short"}, "HEARTH_SECRET"),
    ({"HEARTH_LIMIT_MAX_FRAME_BYTES": "\"big\""}, "HEARTH_LIMIT_MAX_FRAME_BYTES"),
    ({"HEARTH_GC_FREEZE_INTERVAL_S": "-1"}, "HEARTH_GC_FREEZE_INTERVAL_S"),
    ({"HEARTH_GC_FULL_INTERVAL_S": "0"}, "HEARTH_GC_FULL_INTERVAL_S"),
    ({"HEARTH_VOICE_MIX_LISTENERS_ABOVE": "-1"}, "HEARTH_VOICE_MIX_LISTENERS_ABOVE"),
])
def test_bad_values_fail_fast_naming_the_key(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as failure:
        load_config(environ=environ)
    assert names in str(failure.value)


def test_toml_file_then_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "hearth.toml"
    path.write_text('port = 7000\nhost = "0.0.0.0"\n[limits]\nhistory_page_size = 50\n')
    config = load_config(str(path), environ={"HEARTH_PORT": "7001"})
    assert config.port == 7001 and config.host == "0.0.0.0"
    assert config.limits.history_page_size == 50


def test_media_workers_default_per_core_when_supervised() -> None:
    import os

    from server.config import media_worker_count

    config = load_config(environ={})
    assert config.media_workers is None and config.media_capacity_tracks is None
    assert media_worker_count(config, supervised=False) == 1
    assert media_worker_count(config, supervised=True) == (os.cpu_count() or 1)
    config = load_config(environ={"HEARTH_MEDIA_WORKERS": "3",
                                  "HEARTH_MEDIA_CAPACITY_TRACKS": "40"})
    assert media_worker_count(config, supervised=True) == 3
    assert config.media_capacity_tracks == 40
    off = load_config(environ={"HEARTH_VOICE_ENABLED": "false"})
    assert media_worker_count(off, supervised=True) == 0


@pytest.mark.parametrize(("environ", "key"), [
    ({"HEARTH_MEDIA_WORKERS": "-1"}, "HEARTH_MEDIA_WORKERS"),
    ({"HEARTH_MEDIA_CAPACITY_TRACKS": "0"}, "HEARTH_MEDIA_CAPACITY_TRACKS"),
    ({"HEARTH_MEDIA_ICE": "everywhere"}, "HEARTH_MEDIA_ICE"),
    ({"HEARTH_MEDIA_LISTEN": "nope", "HEARTH_REDIS_URL": "redis://x"}, "HEARTH_MEDIA_LISTEN"),
    ({"HEARTH_MEDIA_LISTEN": "0.0.0.0:7400", "HEARTH_REDIS_URL": "redis://x"},
     "HEARTH_MEDIA_ADVERTISE"),
    ({"HEARTH_MEDIA_LISTEN": "10.0.0.5:7400"}, "HEARTH_REDIS_URL"),
])
def test_media_settings_fail_fast(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(environ=environ)
    ok = load_config(environ={"HEARTH_MEDIA_LISTEN": "0.0.0.0:7400",
                              "HEARTH_MEDIA_ADVERTISE": "203.0.113.5",
                              "HEARTH_REDIS_URL": "redis://x"})
    assert ok.media_listen == "0.0.0.0:7400"
