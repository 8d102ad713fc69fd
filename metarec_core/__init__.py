"""metarec_core: cold-start recommendation with meta-learning and transfer learning, headless."""
from metarec_core.dataset import Dataset
from metarec_core.errors import ConfigError, DataError, MetarecError, TrainingError
from metarec_core.features import FeatureEncoder, FeatureSpec
from metarec_core.idmap import IdMap

__all__ = [
    "ConfigError",
    "DataError",
    "Dataset",
    "FeatureEncoder",
    "FeatureSpec",
    "IdMap",
    "MetarecError",
    "TrainingError",
]
