"""What shapes the world: the ``WorldKnobs`` a caller sets, and the fixed constants behind them.

The knobs are logged whole in world.json. The constants (seasonality, categories, regions, networks,
topics, follower tail, engagement exponent) are the world's other shape parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

YEAR_DAYS = 365.25
WINDOW_DAYS = 365  # ground-truth year
N_SNAPSHOTS = 12  # quarterly social snapshots: social monitoring covers the last three years

# Demand by calendar month for an outdoor-gear retailer: summer season, holiday peak in Nov-Dec.
MONTHLY_SEASONALITY = (0.75, 0.7, 0.85, 0.95, 1.05, 1.1, 1.05, 0.95, 0.85, 0.9, 1.45, 1.9)
# Sign-ups follow the season too, more weakly (exponent on the monthly factor).
SIGNUP_SEASONALITY_EXPONENT = 0.5
FIRST_ORDER_AT_SIGNUP = 0.8  # share of customers whose account is created with a first order

ORDER_VALUE_SIGMA = 0.55  # lognormal spread of one order around the customer's mean
SPEND_SHAPE = 4.0  # Gamma-Gamma heterogeneity of customers' mean spend (lower = heavier tail)
PREFERRED_CATEGORY_SHARE = 0.5
PREFERRED_CHANNEL_SHARE = 0.75
FULL_REFUND_SHARE = 0.6  # other refunds are partial: uniform 20-90% of the order
REFUND_DELAY_MIN_DAYS = 3.0
REFUND_DELAY_MEAN_DAYS = 12.0  # exponential on top of the minimum
MEAN_REFUND_FRACTION = FULL_REFUND_SHARE + (1 - FULL_REFUND_SHARE) * 0.55

CATEGORIES = ("apparel", "footwear", "camping", "climbing", "packs", "accessories")
CATEGORY_SHARE = np.array([0.30, 0.20, 0.12, 0.08, 0.10, 0.20])
_PRICE = np.array([0.8, 1.2, 1.6, 1.3, 1.1, 0.4])
CATEGORY_PRICE = _PRICE / (CATEGORY_SHARE @ _PRICE)  # order value multiplier, mean 1 over orders
_RETURNS = np.array([1.4, 1.5, 0.6, 0.5, 0.8, 0.5])
CATEGORY_RETURNS = _RETURNS / (CATEGORY_SHARE @ _RETURNS)  # refund-probability multiplier, mean 1
CATEGORY_MARGIN = np.array([0.50, 0.42, 0.35, 0.38, 0.40, 0.55])

CHANNELS = ("web", "store", "app")
CHANNEL_SHARE = np.array([0.5, 0.3, 0.2])

REGIONS = ("northeast", "southeast", "midwest", "southwest", "west")
REGION_SHARE = np.array([0.20, 0.22, 0.20, 0.13, 0.25])
REGION_SPEND = np.array([1.08, 0.95, 0.94, 0.97, 1.06])

ACQUISITION_CHANNELS = ("search", "social_ads", "store", "email", "marketplace", "referral")
ORGANIC_ACQUISITION_SHARE = np.array([0.32, 0.20, 0.22, 0.12, 0.14, 0.0])
ACQUISITION_RATE_LIFT = np.array([1.0, 0.9, 1.1, 1.05, 0.85, 1.0])
# Referred customers churn more slowly (the referral-programme literature's most robust finding).
REFERRED_DROPOUT_FACTOR = 0.75
REFERRAL_MIN_SIGNUP_DAY = 30  # nobody is referred before the first month's customers exist

NETWORKS = ("instagram", "x", "tiktok")
NETWORK_SHARE = np.array([0.5, 0.3, 0.2])
NETWORKS_PER_LINKED_CUSTOMER = np.array([0.55, 0.32, 0.13])  # P(1, 2, 3 networks)
OTHER_TOPICS = ("music", "sports", "food", "tech", "fashion", "celebrity")
INTERACTION_KINDS = ("mention", "share", "reply", "like")
KIND_SHARE = np.array([0.15, 0.20, 0.25, 0.40])
MISSING_TOPIC_SHARE = 0.03  # the vendor's topic classifier abstains

FOLLOWER_SCALE = 200.0  # Lomax (Pareto II) followers: median ~ 125, tail index FOLLOWER_TAIL
FOLLOWER_TAIL = 1.4
FOLLOWER_CAP = (
    3e6  # ordinary accounts stop here (truncated tail); beyond it there are only celebrities
)
CELEBRITY_FOLLOWERS_LOG10 = (6.0, 7.7)
# Engagements per post = ENGAGEMENT_PER_POST x followers ** ENGAGEMENT_EXPONENT (x per-profile noise).
ENGAGEMENT_PER_POST = 0.3
ENGAGEMENT_EXPONENT = 0.7  # sublinear: big accounts get fewer engagements per follower
INTERACTIONS_PER_PROFILE = 5.0
TARGET_REACH_EXPONENT = 0.6  # preferential attachment: P(target) ~ (followers + 10) ** this
# Topical engagement = log1p(expected topical engagements per quarter / TOPICAL_ENGAGEMENT_REF): about
# 1 for the average social customer, 0 without a social profile.
TOPICAL_ENGAGEMENT_REF = 15.0


@dataclass(frozen=True)
class WorldKnobs:
    """What shapes the world; logged whole in world.json. Defaults: a mid-size outdoor-gear retailer.

    Influence (the only social effects on value): a customer's purchase rate is multiplied by
    ``1 + influence_on_purchases * topical_engagement`` and their referral propensity by
    ``1 + influence_on_referrals * topical_engagement``; both 0 = social data carries no signal.
    """

    influence_on_purchases: float = 0.2
    influence_on_referrals: float = 0.5
    market_topics: tuple[str, ...] = ("outdoor", "hiking")
    social_share: float = 0.5  # customers linked to >= 1 social profile
    non_customer_profile_ratio: float = 1.0  # non-customer profiles per customer profile
    n_celebrities: int | None = None  # non-customer celebrities; None = max(5, n_customers // 5000)
    customer_celebrities: int = 2  # customers whose main profile has celebrity reach
    referred_share: float = 0.15  # customers acquired through a referral
    offline_influencer_share: float = 0.01  # of customers without social profiles
    offline_influencer_boost: float = 15.0  # their referral propensity multiplier
    purchase_rate_mean: float = 5.5  # orders per year while alive (before season and influence)
    purchase_rate_shape: float = 0.7  # Gamma shape: lower = more heterogeneous buyers
    dropout_rate_mean: float = 0.3  # per year (exponential lifetimes, Pareto/NBD)
    dropout_rate_shape: float = 1.2
    mean_order_value: float = 85.0
    refund_rate: float = 0.065  # share of orders later (partly) refunded
    acquisition_growth: float = 0.3  # yearly growth of new sign-ups

    def __post_init__(self):
        object.__setattr__(self, "market_topics", tuple(self.market_topics))
        if not self.market_topics:
            raise ValueError("market_topics must name at least one topic")
        for name in ("social_share", "referred_share", "offline_influencer_share", "refund_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"{f.name} must be >= 0")
        for name in ("purchase_rate_shape", "dropout_rate_shape", "mean_order_value"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")

    def to_dict(self) -> dict:
        """Plain-JSON view (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# Named worlds for the cases the product must tell apart (``clv generate --world NAME``).
WORLDS: dict[str, WorldKnobs] = {
    "default": WorldKnobs(),
    # Social activity has no effect on value at all: social data must be left out of the model.
    "no-influence": WorldKnobs(influence_on_purchases=0.0, influence_on_referrals=0.0),
    # Value driven by topical engagement: purchase rates differ mostly by it (homogeneous base
    # rates, a strong effect) in a young, fast-growing base where history is short, so social data
    # adds what history cannot yet show.
    "topical": WorldKnobs(influence_on_purchases=4.0, influence_on_referrals=0.0, social_share=0.9,
                          acquisition_growth=1.0, purchase_rate_shape=3.0),
}
