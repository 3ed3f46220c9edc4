"""OBSV_DATABASE_URL (docs/reference.md §12): a credential, checked at start, shown masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from obsv.settings import ConfigError, load_settings, masked_url

BASE = {"OBSV_SENTRY_CLIENT_SECRET": "s"}
URL = "postgresql://obsv:p%40ss@db.internal:5432/obsv"


def test_unset_keeps_the_jsonl_log() -> None:
    assert load_settings(None, BASE).database_url is None


def test_the_url_from_env_toml_or_a_secret_file(tmp_path: Path) -> None:
    assert load_settings(None, {**BASE, "OBSV_DATABASE_URL": URL}).database_url == URL
    config = tmp_path / "obsv.toml"
    config.write_text(f'database_url = "{URL}"\n')
    assert load_settings(str(config), BASE).database_url == URL
    secret = tmp_path / "url"
    secret.write_text(URL + "\n")
    from_file = load_settings(None, {**BASE, "OBSV_DATABASE_URL_FILE": str(secret)})
    assert from_file.database_url == URL


def test_repr_and_masks_never_show_the_password() -> None:
    settings = load_settings(None, {**BASE, "OBSV_DATABASE_URL": URL})
    assert "p%40ss" not in repr(settings)
    assert masked_url(URL) == "postgresql://obsv:***@db.internal:5432/obsv"
    assert masked_url("postgresql://db/obsv") == "postgresql://db/obsv"


@pytest.mark.parametrize("url", ["mysql://root:p%40ss@db/obsv", "postgresql://", "db:5432",
                                 "postgresql://obsv:p%40ss@db:port/obsv"])
def test_a_url_that_is_not_a_postgresql_one_is_one_line_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(None, {**BASE, "OBSV_DATABASE_URL": url})
    message = str(error.value)
    assert message.startswith("OBSV_DATABASE_URL: ") and "\n" not in message
    assert "p%40ss" not in message and "postgresql://user:password@host:5432/database" in message


def test_a_driver_error_that_quotes_the_url_is_shown_masked() -> None:
    from obsv.pglog import error_line

    quoted = error_line(ValueError(f"cannot parse {URL}: bad"), URL)
    decoded = error_line(OSError("auth failed for password p@ss"), URL)
    assert "p%40ss" not in quoted and "p@ss" not in decoded
    assert quoted == "cannot parse postgresql://obsv:***@db.internal:5432/obsv: bad"
