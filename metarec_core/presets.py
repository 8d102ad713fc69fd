"""Named training presets: the scenarios users try, as overrides of the default TrainConfig."""
from __future__ import annotations

#: Preset name -> settings that differ from :class:`metarec_core.training.TrainConfig`'s defaults.
PRESETS: dict[str, dict] = {
    "new users (meta + transfer)": {},
    "transfer only": {"lambda_meta": 0.0},
    "meta only": {"lambda_trans": 0.0},
    "new items (text features)": {"scenario": "item-cold", "use_text": True},
}
