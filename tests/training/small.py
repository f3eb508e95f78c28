"""Settings that keep the training tests quick: few rounds, one thread (the machine is shared);
windows sized from the data as by default."""

from features.config import FeatureConfig
from training.config import ModelParams, TrainConfig

MARKET_TOPICS = ("outdoor", "hiking")

SMALL = TrainConfig(
    features=FeatureConfig(market_topics=MARKET_TOPICS),
    model=ModelParams(max_rounds=40, num_leaves=15, min_child_samples=20, num_threads=1),
    bootstrap_resamples=40,
    shap_sample=400,
)
