"""Tuning a funnel for one's own data: :func:`tune`.

Validation splits are cut from the data the way the model will be used: the artists each
listener started last when the data has listen times (each split over a seeded 80% of the
listeners), a random 20% of each listener's artists otherwise. Optuna's TPE searches the
settings the configured parts declare tunable (:func:`funnel.protocols.tunable`) and the
ranker (logistic regression or LightGBM); each trial is fitted on the first two splits and
pruned after the first by the median rule. The best trial is adopted over the starting
configuration only when it also wins on three further splits (two when the budget runs
short) by the project's rule: a mean paired NDCG@10 difference above two standard errors.
Each component alone (EASE at a few penalties, ALS, BiasedSVD, the tag index, popularity) is
scored on the first split beside the funnel, as the floor the funnel should clear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic.fields import FieldInfo
from tqdm.auto import tqdm

from funnel.baselines import (
    ALSRecommender,
    BiasedSVDRecommender,
    EASERecommender,
    PopularityRecommender,
    TagIndexRecommender,
)
from funnel.config import FunnelConfig, resolve
from funnel.data import Dataset, split
from funnel.errors import ConfigError, DataError
from funnel.evaluation import evaluate
from funnel.recommender import Recommender
from funnel.stages import REGISTRIES, Stages

logger = logging.getLogger("funnel")

SEARCH_SPLITS = 2  # each trial is fitted on these (pruned after the first)
CONFIRM_SPLITS = 3  # the best trial must also win on these to be adopted (on at least MIN_CONFIRM if time is short)
MIN_CONFIRM = 2
RANKERS = ("logistic", "lightgbm")  # the rankers the tuner chooses between
EASE_PENALTIES = (50.0, 200.0, 1000.0, 5000.0)  # the EASE component's penalty is chosen on validation

Split = tuple[Dataset, pd.DataFrame]


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    config : FunnelConfig
        The configuration to use: the best trial's when adopted, else the starting one.
    adopted : bool
        Whether the best trial won on the further splits by the rule.
    verdict : str
        One line saying which configuration won, and by how much.
    table : pandas.DataFrame
        One row per trial: ``trial, state, ndcg@10 split 1, ndcg@10 split 2, ndcg@10, seconds``
        and the settings it tried (``section/name.setting``, ``ranker``). Trial 0 is the
        starting configuration.
    components : pandas.DataFrame
        ``method, ndcg@10``: each component alone and the funnel on the first split.
    confirmation : pandas.DataFrame
        ``split, starting, best, difference``: the two configurations on the further splits.
    """

    config: FunnelConfig
    adopted: bool
    verdict: str
    table: pd.DataFrame
    components: pd.DataFrame
    confirmation: pd.DataFrame = field(default_factory=pd.DataFrame)


def validation_splits(dataset: Dataset, n: int, seed: int = 0) -> list[Split]:
    """``n`` validation splits of ``dataset``: temporal with listen times, per user otherwise.

    A temporal split holds out each listener's last-started 20% (:func:`funnel.data.split.temporal`)
    among a seeded 80% of the listeners, so that the splits differ; a per-user split a
    seeded random 20% of each listener's artists.
    """
    if not dataset.has_listen_times:
        return [(part.train, part.test) for part in (split.per_user(dataset, seed=seed + i) for i in range(n))]
    inter = dataset.interactions
    users = np.unique(inter["user_id"].to_numpy())
    out = []
    for i in range(n):
        keep = np.random.default_rng(seed + i).choice(users, max(1, int(round(0.8 * len(users)))), replace=False)
        part = dataset.with_interactions(inter[inter["user_id"].isin(keep)], dataset.tag_assignments)
        held = split.temporal(part)
        out.append((held.train, held.test))
    return out


def ndcg(config: FunnelConfig, part: Split) -> float:
    """Validation NDCG@10 of a funnel of ``config`` fitted on the part's training data."""
    train, valid = part
    return evaluate(Recommender(config).fit(train), train, valid, ks=(10,))["ndcg@10"]


def components(part: Split, seed: int) -> pd.DataFrame:
    """Each component alone on one split: EASE (its best penalty), ALS, BiasedSVD, the tag index, popularity."""
    train, valid = part

    def score(model: Any) -> float:
        return evaluate(model.fit(train), train, valid, ks=(10,))["ndcg@10"]

    ease = max((score(EASERecommender(l2=l2)), l2) for l2 in EASE_PENALTIES)
    rows = [(f"EASE (l2 {ease[1]:g}, chosen on this split)", ease[0]),
            ("ALS", score(ALSRecommender(seed=seed))),
            ("BiasedSVD", score(BiasedSVDRecommender(seed=seed))),
            ("popularity", score(PopularityRecommender()))]
    if train.tag_assignments is not None or train.artist_tags is not None:
        rows.insert(3, ("tag index", score(TagIndexRecommender(seed=seed))))
    return pd.DataFrame(rows, columns=["method", "ndcg@10"])


def _spec(info: FieldInfo) -> dict[str, Any] | None:
    extra = info.json_schema_extra
    return extra.get("tune") if isinstance(extra, dict) else None  # type: ignore[return-value]


def _suggest(trial: Any, key: str, info: FieldInfo, spec: dict[str, Any]) -> Any:
    if "choices" in spec:
        return trial.suggest_categorical(key, spec["choices"])
    if info.annotation is int:
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=spec["log"])
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=spec["log"])


def suggest(trial: Any, base: FunnelConfig) -> FunnelConfig:
    """The configuration a trial tries: ``base`` with every tunable setting of its parts and the ranker drawn."""
    values = base.to_dict()
    if isinstance(values["features"], list):
        values["features"] = {name: {} for name in values["features"]}
    for part in Stages(base).parts.values():
        if part.section == "ranker":
            continue
        for name, info in type(part.settings).model_fields.items():
            spec = _spec(info)
            if spec is None:
                continue
            entries = values[part.section]
            entry = entries.get(part.name, {})
            entry = {"n": entry} if isinstance(entry, int) else dict(entry)
            entry[name] = _suggest(trial, f"{part.key}.{name}", info, spec)
            entries[part.name] = entry
    ranker = trial.suggest_categorical("ranker", list(RANKERS))
    settings = {name: _suggest(trial, f"ranker/{ranker}.{name}", info, spec)
                for name, info in REGISTRIES["ranker"].get(ranker).Settings.model_fields.items()
                if (spec := _spec(info)) is not None}
    values["ranker"] = {"part": ranker, **settings}
    return FunnelConfig.from_dict(values)


def paired(differences: list[float]) -> tuple[float, float]:
    """Mean and standard error of paired differences."""
    values = np.asarray(differences, np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else np.inf


def tune(dataset: Dataset, *, time_budget: float = 600, n_trials: int | None = None, seed: int = 0,
         show_progress: bool = True, config: FunnelConfig | dict[str, Any] | None = None) -> TuneResult:
    """Search settings for ``dataset`` on validation splits cut from it; adopt them only if they hold.

    Parameters
    ----------
    dataset : Dataset
        The data the model will be trained on (never a test split): with listen times, the
        validation splits are temporal, else per user.
    time_budget : float
        Seconds for everything, the components and the checks included. Trials start only
        while the time left covers one more and the confirmation of the best.
    n_trials : int, optional
        At most this many trials (besides the starting configuration).
    seed : int
        Seed of the splits, the sampler and every fit.
    show_progress : bool
        A progress bar over the time budget, with the best score so far.
    config : FunnelConfig or mapping, optional
        The starting configuration, whose parts are tuned (default: the defaults).

    Returns
    -------
    TuneResult

    Raises
    ------
    ConfigError
        A bad budget, trial count or starting configuration.
    DataError
        Data too small to cut validation splits from.
    """
    import optuna

    if isinstance(time_budget, bool) or not isinstance(time_budget, (int, float)) or not time_budget > 0:
        raise ConfigError(f"time_budget={time_budget!r} must be a number of seconds > 0")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0):
        raise ConfigError(f"n_trials={n_trials!r} must be an integer >= 0, or None for as many as the budget allows")
    if not isinstance(dataset, Dataset):
        raise DataError(f"tune expects a funnel.Dataset, got {type(dataset).__name__}")
    base = resolve(config, {"seed": seed, "show_progress": False})
    Stages(base)  # a bad part fails here
    started = time.perf_counter()
    bar = tqdm(total=round(time_budget), desc="tuning", unit="s", disable=not show_progress)

    def tick(best: float | None = None) -> None:
        bar.n = min(round(time.perf_counter() - started), bar.total)
        if best is not None:
            bar.set_postfix_str(f"best ndcg@10 {best:.4f}")
        bar.refresh()

    splits = validation_splits(dataset, SEARCH_SPLITS + CONFIRM_SPLITS, seed)
    kind = "temporal" if dataset.has_listen_times else "per-user"
    logger.info("tuning on %d %s validation splits for %.0fs", len(splits), kind, time_budget)
    floor = components(splits[0], seed)
    tick()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    start_scores = [ndcg(base, part) for part in splits[:SEARCH_SPLITS]]
    fit_seconds = (time.perf_counter() - t0) / SEARCH_SPLITS
    rows.append({"trial": 0, "state": "starting configuration", **_scores(start_scores),
                 "seconds": time.perf_counter() - t0})
    tick(float(np.mean(start_scores)))
    # the confirmation fits the starting and the best configuration on at least MIN_CONFIRM further splits
    reserve = 2 * MIN_CONFIRM * fit_seconds * 1.2

    def left() -> float:
        return time_budget - (time.perf_counter() - started)

    def objective(trial: Any) -> float:
        candidate = suggest(trial, base)
        trial.set_user_attr("config", candidate.to_dict())
        t = time.perf_counter()
        scores = []
        for step, part in enumerate(splits[:SEARCH_SPLITS]):
            scores.append(ndcg(candidate, part))
            trial.report(scores[-1], step)
            if trial.should_prune():
                trial.set_user_attr("scores", scores)
                trial.set_user_attr("seconds", time.perf_counter() - t)
                raise optuna.TrialPruned()
        trial.set_user_attr("scores", scores)
        trial.set_user_attr("seconds", time.perf_counter() - t)
        return float(np.mean(scores))

    def stop_in_time(study: Any, trial: Any) -> None:
        done = [t.user_attrs.get("seconds", 0.0) for t in study.trials if "seconds" in t.user_attrs]
        typical = float(np.median(done)) if done else 2 * fit_seconds
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        tick(max([t.value for t in completed] + [float(np.mean(start_scores))]))
        if left() < reserve + typical * 1.2:
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    if n_trials != 0 and left() > reserve + 2 * fit_seconds:
        study.optimize(objective, n_trials=n_trials, timeout=max(left() - reserve, 1.0), callbacks=[stop_in_time],
                       catch=(DataError, ConfigError))
    for trial in study.trials:
        rows.append({"trial": trial.number + 1, "state": trial.state.name.lower(),
                     **_scores(trial.user_attrs.get("scores", [])), "seconds": trial.user_attrs.get("seconds"),
                     **trial.params})
    table = pd.DataFrame(rows)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(completed, key=lambda t: float(t.value or 0.0), default=None)
    result = _decide(base, best, float(np.mean(start_scores)), splits[SEARCH_SPLITS:], left, fit_seconds)
    tick()
    bar.close()
    adopted_config, adopted, verdict, confirmation = result
    funnel_score = float(best.value) if adopted and best is not None and best.value is not None \
        else float(np.mean(start_scores))
    floor = pd.concat([floor, pd.DataFrame([("funnel, " + ("tuned" if adopted else "starting configuration"),
                                             funnel_score)], columns=["method", "ndcg@10"])], ignore_index=True)
    best_component = floor.iloc[:-1].loc[floor["ndcg@10"].iloc[:-1].idxmax()]
    if funnel_score < best_component["ndcg@10"]:
        logger.warning("on validation the funnel (%.4f) is below %s alone (%.4f): its ranker does not recover that "
                       "component's order on this data", funnel_score, best_component["method"],
                       best_component["ndcg@10"])
    logger.info("%s", verdict)
    return TuneResult(adopted_config, adopted, verdict, table, floor, confirmation)


def _scores(scores: list[float]) -> dict[str, float]:
    out = {f"ndcg@10 split {i + 1}": s for i, s in enumerate(scores)}
    out["ndcg@10"] = float(np.mean(scores)) if len(scores) == SEARCH_SPLITS else float("nan")
    return out


def _decide(base: FunnelConfig, best: Any, start_score: float, further: list[Split], left: Callable[[], float],
            fit_seconds: float) -> tuple[FunnelConfig, bool, str, pd.DataFrame]:
    """The configuration to keep: the best trial's (its ``config`` attribute) if it wins on the further splits."""
    if best is None or best.value <= start_score:
        return base, False, (f"kept the starting configuration: no trial beat its validation NDCG@10 "
                             f"({start_score:.4f}) on the search splits"), pd.DataFrame()
    candidate = FunnelConfig.from_dict(best.user_attrs["config"])
    rows: list[dict[str, float]] = []
    for i, part in enumerate(further):
        if left() < 2 * fit_seconds * 1.2 and len(rows) >= MIN_CONFIRM:
            break  # the budget is spent: decide on the splits scored
        rows.append({"split": SEARCH_SPLITS + i + 1, "starting": ndcg(base, part), "best": ndcg(candidate, part)})
    confirmation = pd.DataFrame(rows)
    confirmation["difference"] = confirmation["best"] - confirmation["starting"]
    mean, se = paired(confirmation["difference"].tolist())
    wins = mean > 2 * se and mean > 0
    verdict = (f"{'adopted' if wins else 'kept the starting configuration over'} trial {best.number + 1} "
               f"(search splits {best.value:.4f} vs {start_score:.4f}): on {len(rows)} further splits "
               f"{mean:+.4f} ± {se:.4f} NDCG@10, {'above' if wins else 'not above'} two standard errors")
    return (candidate if wins else base), wins, verdict, confirmation
