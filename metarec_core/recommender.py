"""The recommender: a trained run that adapts to one user from a few ratings and ranks items."""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metarec_core.artifacts import LoadedRun, load_run
from metarec_core.device import cpu_threads
from metarec_core.errors import DataError
from metarec_core.meta import adapt, score
from metarec_core.metrics import mae, ndcg_at_k
from metarec_core.models import EntityTensors, FeatureContext
from metarec_core.tasks import Episode, tasks_from_frames


@dataclass(frozen=True)
class UserState:
    """One user's adapted parameters and what produced them.

    Attributes
    ----------
    user_id
        External ID (``None`` for an anonymous new user).
    known
        Whether the user was a training (warm) user whose ID parameters are used.
    support_items, support_ratings
        The ratings adapted on (item indices, ratings).
    params
        Parameters after adaptation (adapted ones with a leading dimension 1).
    losses
        Support loss before each inner step and after the last.
    path
        Parameters before each inner step and after the last (see :meth:`Recommender.step_scores`).
    seconds
        Time the adaptation took.
    """

    user_id: str | None
    known: bool
    support_items: np.ndarray
    support_ratings: np.ndarray
    params: dict[str, torch.Tensor] = field(repr=False)
    context: FeatureContext = field(repr=False)
    user_index: int = 0
    losses: tuple[float, ...] = ()
    seconds: float = 0.0
    path: tuple[dict[str, torch.Tensor], ...] = field(default=(), repr=False)


def _with_run_threads(method: Callable) -> Callable:
    """Run a :class:`Recommender` method with the run's ``cpu_threads`` (one thread is fastest on these small tensors)."""

    @functools.wraps(method)
    def wrapped(self: "Recommender", *args, **kwargs):
        with cpu_threads(self.run.config.cpu_threads):
            return method(self, *args, **kwargs)

    return wrapped


class Recommender:
    """Adapt-and-rank on top of a trained run directory.

    Every computation runs with the run's ``cpu_threads`` (as training does,
    through :func:`metarec_core.device.cpu_threads`; 0 keeps torch's choice).

    Examples
    --------
    >>> rec = Recommender.from_run_dir("runs/demo")  # doctest: +SKIP
    >>> state = rec.adapt_user([("50", 5.0), ("181", 4.0)])  # doctest: +SKIP
    >>> rec.recommend(state, k=5)  # doctest: +SKIP
    """

    def __init__(self, run: LoadedRun) -> None:
        self.run = run
        self.model = run.model
        self._start = dict(run.model.named_parameters())

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, *, device: str = "cpu") -> "Recommender":
        """Load a run directory (see :func:`metarec_core.artifacts.load_run`)."""
        return cls(load_run(run_dir, device=device))

    @property
    def items(self):
        """The item ID map."""
        return self.run.items

    @property
    def users(self):
        """The user ID map."""
        return self.run.users

    def item_indices(self, item_ids: Sequence[object], *, source: str = "support") -> np.ndarray:
        """Indices of external item IDs; unknown IDs raise a :class:`DataError` naming them."""
        idx = self.run.items.lookup(item_ids)
        if (idx < 0).any():
            unknown = [str(item_ids[i]) for i in np.flatnonzero(idx < 0)[:5]]
            raise DataError(
                f"item ID(s) {', '.join(unknown)} are not in this run's catalogue; "
                "use item IDs from the training data or retrain with these items in the item table",
                source=source, column="item_id",
            )
        return idx

    @_with_run_threads
    def adapt_user(
        self,
        ratings: Sequence[tuple[object, float]] | pd.DataFrame,
        *,
        user_id: object | None = None,
        user_features: Mapping[str, object] | None = None,
        steps: int | None = None,
        use_known: bool = True,
    ) -> UserState:
        """Adapt the model to one user from their ratings (the support set).

        Parameters
        ----------
        ratings
            ``(item_id, rating)`` pairs, or a frame with ``item_id`` and ``rating``.
        user_id
            A known user's ID (their learned parameters and features are used
            when ``use_known``), or a new ID / ``None`` for a new user.
        user_features
            Side features of a new user (``{"age": 30, "gender": "F"}``); missing ones are unknown.
        steps
            Inner steps (default: the run's ``inner_steps``).
        use_known
            Use a known user's learned ID parameters (warm scoring).
        """
        if isinstance(ratings, pd.DataFrame):
            pairs = list(zip(ratings["item_id"].tolist(), ratings["rating"].tolist()))
        else:
            pairs = list(ratings)
        items = self.item_indices([p[0] for p in pairs]) if pairs else np.zeros(0, np.int64)
        values = np.asarray([float(p[1]) for p in pairs], dtype=np.float32)
        known_index = self.run.users.get(user_id) if user_id is not None else -1
        device = self.run.context.items.categorical.device
        if known_index >= 0:
            context = self.run.context
            user_index = known_index
            warm = use_known and bool(self.model.user_known[known_index])
        else:
            context = FeatureContext(self._new_user_features(user_features or {}).to(device), self.run.context.items)
            user_index = 0
            warm = False
        episode = Episode(
            users=torch.tensor([user_index], device=device),
            items=torch.as_tensor(items, device=device).reshape(1, -1),
            ratings=torch.as_tensor(values, device=device).reshape(1, -1),
            mask=torch.ones((1, len(items)), dtype=torch.bool, device=device),
            warm=warm,
        )
        config = self.run.config
        trace: list[float] = []
        path: list[dict[str, torch.Tensor]] = []
        started = time.perf_counter()
        with torch.no_grad():
            params = adapt(
                self.model, self._start, episode, context,
                lr=self.run.inner_lr or config.inner_lr, loss=self.run.loss, trace=trace, path=path,
                **(config.inner_loop() | ({} if steps is None else {"steps": int(steps)})),
            )
        return UserState(
            user_id=None if user_id is None else str(user_id), known=warm, support_items=items, support_ratings=values,
            params=params, context=context, user_index=user_index, losses=tuple(trace), seconds=time.perf_counter() - started,
            path=tuple(path),
        )

    @_with_run_threads
    def score_pairs(self, support: pd.DataFrame, pairs: pd.DataFrame, *, chunk: int = 256) -> np.ndarray:
        """Scores of ``(user_id, item_id)`` pairs, each user adapted on their own support rows, users batched.

        The same numbers as :meth:`adapt_user` followed by :meth:`score_items`
        for each user (known training users keep their learned ID parameters;
        users unknown to the run start from the meta-learned start with
        unknown features), computed ``chunk`` users at a time.

        Parameters
        ----------
        support
            ``user_id``, ``item_id``, ``rating``: what each user adapts on (may be empty).
        pairs
            ``user_id``, ``item_id``: what to score.

        Returns
        -------
        numpy.ndarray
            One score per row of ``pairs``, in its order (clipped ratings; probabilities on implicit data).
        """
        from metarec_core.scoring import predict_tasks

        run, model = self.run, self.model
        device = run.context.items.categorical.device
        pair_items = self.item_indices(pairs["item_id"].tolist(), source="pairs")
        sup_items = self.item_indices(support["item_id"].tolist()) if len(support) else np.zeros(0, np.int64)
        ids = pd.Index(pd.unique(pd.concat([pairs["user_id"], support["user_id"]]).astype(str)))
        index = run.users.lookup(ids.tolist())
        n_users = len(run.users)
        unknown = np.flatnonzero(index < 0)
        index[unknown] = n_users + np.arange(len(unknown))  # each unknown user gets its own row of missing features
        trained = model.user_known.cpu().numpy()
        warm_user = (index < n_users) & trained[np.minimum(index, n_users - 1)]
        user_of = dict(zip(ids, index))

        def indexed(rows: pd.DataFrame, items: np.ndarray, ratings: np.ndarray) -> pd.DataFrame:
            users = rows["user_id"].astype(str).map(user_of).to_numpy(np.int64)
            return pd.DataFrame({"user": users, "item": items, "rating": ratings})

        sup = indexed(support, sup_items, np.asarray(support["rating"], dtype=np.float32) if len(support) else np.zeros(0, np.float32))
        qry = indexed(pairs, pair_items, np.zeros(len(pairs), np.float32))
        context = FeatureContext(run.context.users.extended(len(unknown)), run.context.items)
        inner_lr = run.inner_lr or run.config.inner_lr
        out = np.zeros(len(pairs), dtype=np.float64)
        for warm in (True, False):
            users = np.sort(index[warm_user == warm])
            for start in range(0, len(users), chunk):
                part = users[start:start + chunk]
                rows = np.flatnonzero(qry["user"].isin(part).to_numpy())
                if not len(rows):
                    continue
                tasks, positions = tasks_from_frames(sup[sup["user"].isin(part)], qry.iloc[rows], users=part, warm=warm)
                predictions = predict_tasks(model, inner_lr, run.config, tasks.to(device), context, run.loss, chunk=chunk)
                out[rows] = predictions.reshape(-1)[positions]
        if run.loss == "bce":
            return 1.0 / (1.0 + np.exp(-out))
        return np.clip(out, *run.rating_range)

    def step_scores(self, state: UserState, items: np.ndarray) -> np.ndarray:
        """Scores of ``items`` under the parameters before each inner step and after the last -> ``(steps + 1, n)``."""
        return np.stack([self.score_items(dataclasses.replace(state, params=params), items) for params in state.path])

    def step_losses(
        self,
        ratings: Sequence[tuple[object, float]],
        *,
        user_features: Mapping[str, object] | None = None,
        state: UserState | None = None,
    ) -> pd.DataFrame:
        """The loss at every inner step of adapting to ``ratings``, on the support and on the newest rating.

        ``support``: the support loss before each inner step and after the
        last (``state.losses``). ``query`` (ratings only, from the first one
        on): the squared error on the newest rating, predicted by the model
        adapted on the ratings before it (none for the first rating: the
        meta-learned start), after 0, 1, ... steps — what the model expected
        before it was told.

        Parameters
        ----------
        ratings
            ``(item_id, rating)`` pairs in the order given.
        user_features
            The user's side features.
        state
            ``adapt_user(ratings, user_features=...)`` when already at hand.

        Returns
        -------
        pandas.DataFrame
            ``set`` (``support`` / ``query``), ``step`` and ``loss``.
        """
        ratings = list(ratings)
        state = state if state is not None else self.adapt_user(ratings, user_features=user_features)
        rows = [("support", s, float(v)) for s, v in enumerate(state.losses)]
        if ratings and not self.run.implicit:
            item_id, truth = ratings[-1]
            before = self.adapt_user(ratings[:-1], user_features=user_features)
            predicted = self.step_scores(before, self.item_indices([item_id]))[:, 0]
            rows += [("query", s, float(p - truth) ** 2) for s, p in enumerate(predicted)]
        return pd.DataFrame(rows, columns=["set", "step", "loss"])

    def query_quality(self, state: UserState, query: pd.DataFrame, *, k: int = 3) -> dict[str, float]:
        """MAE and nDCG@``k`` (gain ``2^r − 1``) of an adapted user on held-out ratings.

        Parameters
        ----------
        state
            The adapted user.
        query
            Held-out ratings with ``item_id`` and ``rating``.
        k
            Cut-off of the nDCG.

        Returns
        -------
        dict
            ``{"mae": ..., "ndcg@k": ...}``.
        """
        truth = query["rating"].to_numpy(dtype=float)
        predicted = self.score_items(state, self.item_indices(query["item_id"].tolist(), source="query"))
        return {"mae": mae(truth, predicted), f"ndcg@{k}": ndcg_at_k(truth, predicted, k=k)}

    def start_state(self, *, user_features: Mapping[str, object] | None = None) -> UserState:
        """The meta-learned starting point for a new user with no ratings yet."""
        return self.adapt_user([], user_features=user_features, steps=0)

    @_with_run_threads
    def score_items(self, state: UserState, items: np.ndarray | None = None, *, clip: bool = True) -> np.ndarray:
        """Scores of ``items`` (indices; default all) for an adapted user.

        Predicted ratings are clipped to the training range unless ``clip`` is
        false (ranking uses the unclipped values so that ties at the top of the
        scale keep their order); implicit data gives probabilities.
        """
        device = self.run.context.items.categorical.device
        idx = np.arange(len(self.run.items)) if items is None else np.asarray(items, dtype=np.int64)
        episode = Episode(
            users=torch.tensor([state.user_index], device=device),
            items=torch.as_tensor(idx, device=device).reshape(1, -1),
            ratings=torch.zeros((1, len(idx)), device=device),
            mask=torch.ones((1, len(idx)), dtype=torch.bool, device=device),
            warm=state.known,
        )
        with torch.no_grad():
            out = score(self.model, state.params, episode, state.context).reshape(-1).cpu().numpy()
        if self.run.loss == "bce":
            return 1.0 / (1.0 + np.exp(-out))
        return np.clip(out, *self.run.rating_range) if clip else out

    def recommend(self, state: UserState, *, k: int = 10, exclude: Sequence[int] | None = None) -> pd.DataFrame:
        """Top-``k`` items the user has not rated: not in the support set, nor a known user's history, nor ``exclude``.

        Returns a frame with ``item_id``, ``item`` (index), ``score`` and ``rank``.
        """
        scores = self.score_items(state, clip=False)
        banned = set(state.support_items.tolist()) | set(exclude or [])
        if state.user_id is not None and state.user_id in self.run.users:
            banned |= set(self.run.seen_items(self.run.users.index(state.user_id)).tolist())
        if banned:
            scores = scores.copy()
            scores[list(banned)] = -np.inf
        k = max(0, min(int(k), int(np.isfinite(scores).sum())))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        shown = scores[top] if self.run.loss == "bce" else np.clip(scores[top], *self.run.rating_range)
        return pd.DataFrame({
            "item_id": self.run.items.externals(top), "item": top, "score": shown, "rank": np.arange(1, len(top) + 1),
        })

    @_with_run_threads
    def user_vector(self, state: UserState) -> np.ndarray:
        """The user's taste vector (in the item-factor space), for embedding plots."""
        device = self.run.context.items.categorical.device
        users = torch.tensor([state.user_index], device=device)
        with torch.no_grad():
            x_user = self.model.user_features(state.context.users, users)
            taste, _ = self.model.user_vectors(users, x_user, warm=state.known, params=state.params)
        return taste[0].cpu().numpy()

    @_with_run_threads
    def user_vectors(self, support: pd.DataFrame) -> np.ndarray:
        """Every user's taste vector, new users adapted on their support rows, all in one batch.

        Users known from training keep their learned parameters (no
        adaptation); every other user of the run's ID map is adapted on its
        rows of ``support`` (columns ``user_id``, ``item_id``, ``rating``;
        items unknown to the run are skipped) and a user with no rows sits at
        the meta-learned start. Returns ``(n_users, factor_dim)``.
        """
        model = self.model
        device = self.run.context.items.categorical.device
        n_users = len(self.run.users)
        users = self.run.users.lookup(support["user_id"].tolist()) if len(support) else np.zeros(0, np.int64)
        items = self.run.items.lookup(support["item_id"].tolist()) if len(support) else np.zeros(0, np.int64)
        known = model.user_known.cpu().numpy()
        keep = (users >= 0) & (items >= 0) & ~known[np.maximum(users, 0)]
        frame = pd.DataFrame({"user": users[keep], "item": items[keep], "rating": np.asarray(support["rating"], dtype=np.float32)[keep] if len(support) else np.zeros(0, np.float32)})
        everyone = np.arange(n_users)
        query = pd.DataFrame({"user": everyone, "item": np.zeros(n_users, np.int64), "rating": np.zeros(n_users, np.float32)})
        tasks, _ = tasks_from_frames(frame, query, users=everyone)
        config = self.run.config
        with torch.no_grad():
            cold = Episode(tasks.users.to(device), tasks.support_items.to(device), tasks.support_ratings.to(device), tasks.support_mask.to(device), False)
            adapted = adapt(
                model, self._start, cold, self.run.context, lr=self.run.inner_lr or config.inner_lr, loss=self.run.loss,
                **config.inner_loop(),
            )
            index = torch.arange(n_users, device=device)
            x_user = model.user_features(self.run.context.users, index)
            taste, _ = model.user_vectors(index, x_user, params=adapted)
            warm_taste, _ = model.user_vectors(index, x_user, warm=True)
            taste = torch.where(torch.as_tensor(known, device=device).unsqueeze(-1), warm_taste, taste)
        return taste.cpu().numpy()

    def user_cohorts(self, n_ratings: np.ndarray) -> np.ndarray:
        """Cohort of every user of the run: ``warm``, ``new`` or ``meta-test``.

        ``warm`` users were trained on; ``new`` users are the run's held-out
        test users (or have no ratings at all); ``meta-test`` users are the
        training-time cold users held out for validation. ``n_ratings`` gives
        each user's number of ratings, in the run's user order.
        """
        known = self.model.user_known.cpu().numpy()
        test = np.zeros(len(known), dtype=bool)
        test[np.asarray(self.run.meta.get("cold_users", []), dtype=np.int64)] = True
        empty = np.asarray(n_ratings) == 0
        return np.where(known, "warm", np.where(test | empty, "new", "meta-test"))

    @_with_run_threads
    def item_vectors(self) -> np.ndarray:
        """Every item's factor vector ``q_i`` (ID factor of known items plus the feature projection)."""
        model = self.model
        idx = torch.arange(len(self.run.items), device=self.run.context.items.categorical.device)
        with torch.no_grad():
            q, _ = model.item_vectors(idx, model.item_features(self.run.context.items, idx))
        return q.cpu().numpy()

    def _new_user_features(self, values: Mapping[str, object]) -> EntityTensors:
        known = {v.spec.name for v in self.run.user_encoder.vocabs}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DataError(f"unknown user feature(s) {', '.join(unknown)}; this run knows {', '.join(sorted(known)) or 'none'}")
        table = pd.DataFrame([{name: values.get(name) for name in known}]) if known else None
        return EntityTensors.from_encoded(self.run.user_encoder.transform(table, n_rows=1))
