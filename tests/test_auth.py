"""funnel.serving.auth: key files and the setting that names one, without a server."""

import pytest

from funnel.errors import ConfigError
from funnel.serving.auth import ADMIN, KEY_FILE_ENV, USER, APIKeys, digest, key_file_setting


def test_a_digest_on_two_lines_is_refused_naming_both(tmp_path):
    first, second = digest("alice-key"), digest("bob-key")
    path = tmp_path / "keys.txt"
    path.write_text(f"# keys\n{first}\n{second} admin\n\n{first.upper()} admin\n")
    with pytest.raises(ConfigError, match=f"lines 2 and 5 list the same digest \\({first[:8]}\\.\\.\\.\\)") as error:
        APIKeys.from_file(path)
    assert first not in str(error.value) and first.upper() not in str(error.value)
    path.write_text(f"{first}\n{second} admin\n")
    assert APIKeys.from_file(path).digests == ((first, USER), (second, ADMIN))


def test_an_empty_key_file_setting_is_an_error_not_an_open_service(tmp_path, monkeypatch):
    path = tmp_path / "keys.txt"
    path.write_text(digest("alice-key") + "\n")
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    assert key_file_setting() is None and APIKeys.from_env() is None  # unset: no keys, as documented
    assert key_file_setting(path) == str(path)
    for empty in ("", "  ", "\t"):
        with pytest.raises(ConfigError, match="--api-key-file \\(api_key_file\\) is empty.*name the API key file"):
            key_file_setting(empty)
        monkeypatch.setenv(KEY_FILE_ENV, empty)
        with pytest.raises(ConfigError, match=f"{KEY_FILE_ENV} is empty .*or unset it to serve without keys"):
            key_file_setting()
        with pytest.raises(ConfigError, match=f"{KEY_FILE_ENV} is empty"):
            APIKeys.from_env()
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    with pytest.raises(ConfigError, match="--api-key-file"):
        key_file_setting("")  # an empty flag does not fall back to the variable
    assert key_file_setting() == str(path)
    keys = APIKeys.from_env()
    assert keys is not None and keys.role("alice-key") == USER
