"""funnel.serving.settings: every service setting from arguments, FUNNEL_ variables or defaults."""

import pytest

from funnel.errors import ConfigError
from funnel.serving.settings import DEFAULTS, ServiceSettings, env_name


@pytest.fixture(autouse=True)
def no_service_variables(monkeypatch):
    for name in ServiceSettings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)


def test_an_argument_wins_over_its_variable_which_wins_over_the_default(monkeypatch):
    monkeypatch.setenv("FUNNEL_MAX_N", "20")
    monkeypatch.setenv("FUNNEL_MAX_HISTORY", "50")
    monkeypatch.setenv("FUNNEL_CORS_ORIGINS", " https://a.example , ,https://b.example")
    settings = ServiceSettings.from_env(max_n=7, max_batch=None)
    assert settings.max_n == 7 and settings.max_history == 50 and settings.max_batch == DEFAULTS.max_batch
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    monkeypatch.setenv("FUNNEL_MAX_N", "")  # an empty variable is unset
    assert ServiceSettings.from_env().max_n == DEFAULTS.max_n


def test_defaults_that_depend_on_others_are_filled_in():
    settings = ServiceSettings.from_env(max_history=10, threads=3).resolved()
    assert (settings.max_cost, settings.threads, settings.queue) == (40, 3, 12)
    assert ServiceSettings.from_env(queue=0).resolved().queue == 0  # no queue at all is a setting
    assert ServiceSettings.from_env().resolved().threads >= 2


@pytest.mark.parametrize(("variable", "text", "message"), [
    ("FUNNEL_MAX_BATCH", "zero", "FUNNEL_MAX_BATCH='zero' must be a whole number of at least 1"),
    ("FUNNEL_THREADS", "0", "FUNNEL_THREADS='0' must be a whole number of at least 1"),
    ("FUNNEL_QUEUE", "-1", "FUNNEL_QUEUE='-1' must be a whole number of at least 0"),
    ("FUNNEL_TIME_BUDGET", "inf", "FUNNEL_TIME_BUDGET='inf' must be a number of seconds above 0"),
    ("FUNNEL_TIME_BUDGET", "soon", "FUNNEL_TIME_BUDGET='soon' must be a number of seconds above 0"),
])
def test_a_bad_variable_is_named_with_what_it_must_be(monkeypatch, variable, text, message):
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigError, match=message):
        ServiceSettings.from_env()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"threads": 0}, "threads must be a whole number of at least 1, not 0"),
    ({"max_n": True}, "max_n must be a whole number of at least 1, not True"),
    ({"time_budget": 0}, "time_budget must be a number of seconds above 0, not 0"),
    ({"cors_origins": "https://a.example"}, "cors_origins must be a list of origins"),
    ({"max_m": 3}, "unknown service setting.*max_m"),
])
def test_a_bad_argument_is_named_with_what_it_must_be(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ServiceSettings.from_env(**overrides)


def test_a_blank_key_file_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("FUNNEL_API_KEY_FILE", " ")
    with pytest.raises(ConfigError, match="FUNNEL_API_KEY_FILE is empty"):
        ServiceSettings.from_env()


def test_the_variables_of_a_worker_give_back_the_same_settings(monkeypatch, tmp_path):
    settings = ServiceSettings.from_env(model_dir=tmp_path, max_n=5, time_budget=2.5, queue=0,
                                        cors_origins=["https://a.example", "https://b.example"])
    for variable, value in settings.to_env().items():
        monkeypatch.setenv(variable, value)
    assert ServiceSettings.from_env() == settings
