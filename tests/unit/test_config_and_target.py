import msgspec
import pytest

from corral_libs.config import SettingsError, load_settings
from corral_services.api.routes.sandboxes import parse_metadata_filter
from corral_services.proxy.target import BadTarget, Target, resolve_target


class Example(msgspec.Struct):
    port: int = 1
    name: str = "x"
    flag: bool = False


def test_settings_from_prefixed_env_and_overrides():
    env = {"CORRAL_PORT": "8080", "CORRAL_FLAG": "true", "PORT": "1"}
    assert load_settings(Example, env) == Example(port=8080, flag=True)
    assert load_settings(Example, env, port=9, name=None) == Example(port=9, flag=True)
    with pytest.raises(SettingsError, match="CORRAL_"):
        load_settings(Example, {"CORRAL_PORT": "eighty"})


def test_proxy_target_from_headers_or_host():
    assert resolve_target({"e2b-sandbox-id": "abc", "e2b-sandbox-port": "49983", "host": "x"}) == Target(
        "abc", 49983
    )
    assert resolve_target({"host": "8000-abc123.localhost:3001"}) == Target("abc123", 8000)
    for bad in (
        {"host": "localhost"},
        {"e2b-sandbox-id": "abc"},
        {"host": "99999-abc.localhost"},
        {"e2b-sandbox-id": "ABC-1", "e2b-sandbox-port": "1"},
    ):
        with pytest.raises(BadTarget):
            resolve_target(bad)


def test_metadata_filter_decoding_matches_the_sdks_triple_encoding():
    # {"a b": "x&y"} as the SDKs send it, after the server's normal query decoding.
    assert parse_metadata_filter("a%2520b%3Dx%2526y") == {"a b": "x&y"}
    assert parse_metadata_filter("k=v&k2=v2") == {"k": "v", "k2": "v2"}
    assert parse_metadata_filter("") == {}
