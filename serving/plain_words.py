"""Plain-language labels for every feature, and reasons and money written the way a marketing VP reads them.

One dictionary (``LABELS``) names every feature the catalogue (features.build.FAMILIES) can produce;
the report, the contact list and anything else shown to decision makers use it, so a feature is
called the same everywhere. Reasons come from the scorer as machine text
(serving.scoring.reasons: ``net_spend_per_year=1380.19: +210.50``); ``plain_reason`` turns one into a
sentence: "Net spend per year of 1,380.19 raises the value by EUR 210.50".
"""

from __future__ import annotations

import math
import re

ATTRIBUTE_PREFIX = "attr_"  # features.families.attributes.PREFIX: one feature per customer attribute

LABELS = {
    # history: what the customer bought and when
    "tenure_days": "Days as a customer",
    "days_since_first_order": "Days since first order",
    "days_since_last_order": "Days since last order",
    "order_count": "Number of orders",
    "orders_per_year": "Orders per year",
    "gross_spend_total": "Total spend before refunds",
    "net_spend_total": "Total net spend",
    "net_spend_per_year": "Net spend per year",
    "order_value_mean": "Average order value",
    "order_value_median": "Typical order value",
    "order_value_max": "Largest order",
    "spend_30d": "Net spend in the last 30 days",
    "spend_90d": "Net spend in the last 90 days",
    "spend_180d": "Net spend in the last 180 days",
    "spend_365d": "Net spend in the last year",
    "spend_horizon": "Net spend in the last forecast period",
    "spend_trend_180d": "Spending trend over the last six months",
    "purchase_gap_mean_days": "Average days between orders",
    "purchase_gap_std_days": "Spread of days between orders",
    "refund_count": "Number of refunds",
    "refund_share": "Share of spend refunded",
    "quantity_total": "Units bought",
    "category_count": "Product categories bought",
    "top_category_share": "Share of spend in the favourite category",
    "peak_season_spend_share": "Share of spend in peak season",
    "margin_total": "Total margin",
    # btyd: the classic repeat-purchase (BG/NBD, Gamma-Gamma) forecasts
    "btyd_p_alive": "Chance still active",
    "btyd_expected_orders": "Expected orders (purchase-pattern forecast)",
    "btyd_expected_order_value": "Expected spend per order",
    "btyd_expected_value": "Expected spend (purchase-pattern forecast)",
    # season
    "season_sin": "Time of year (seasonal cycle, part 1)",
    "season_cos": "Time of year (seasonal cycle, part 2)",
    "horizon_peak_share": "Share of the forecast period in peak season",
    # referral
    "referrals_made": "Customers referred",
    "referrals_made_365d": "Customers referred in the last year",
    "referred_revenue": "Revenue from referred customers",
    "was_referred": "Came through a referral",
    # coverage
    "has_social_profile": "Known on social media",
    # social
    "followers_log": "Social media followers",
    "follower_growth_90d": "Follower growth over 90 days",
    "follower_growth_365d": "Follower growth over a year",
    "posts": "Social media posts",
    "engagement_rate": "Engagement per follower",
    "influence_score_max": "Influence score (vendor, 0-100)",
    "n_networks": "Social networks used",
    "days_since_last_snapshot": "Days since social profile last seen",
    # network
    "pagerank": "Standing in the social network",
    "weighted_in_degree": "Recent mentions, shares and replies received",
    "topic_pagerank": "Standing among people talking about our market",
    # topical
    "topical_share": "Share of social activity about our market",
    "topical_share_90d": "Share of social activity about our market, last 90 days",
    "topical_engagement": "Engagement on posts about our market",
    "topical_reach_log": "Audience interested in our market",
    # the scores' own columns, for pages that show them
    "predicted_value": "Predicted value",
    "value_p10": "Value, low end of range",
    "value_p90": "Value, high end of range",
    "p_alive": "Chance still active",
    "expected_orders": "Expected orders",
}

# The feature families (features.build.FAMILIES) as kinds of data.
FAMILY_LABELS = {
    "history": "Purchase history",
    "btyd": "Repeat-purchase forecast",
    "season": "Time of year",
    "attributes": "Customer attributes",
    "referral": "Referrals",
    "coverage": "Presence on social media",
    "social": "Social media profile",
    "network": "Social network standing",
    "topical": "Interest in our market",
}

# How a feature's value reads: amounts of money, shares shown as percentages, yes/no flags, and
# features stored as log1p(count) that read better as the count itself.
MONEY = {"gross_spend_total", "net_spend_total", "net_spend_per_year", "order_value_mean", "order_value_median",
         "order_value_max", "spend_30d", "spend_90d", "spend_180d", "spend_365d", "spend_horizon", "margin_total",
         "btyd_expected_order_value", "btyd_expected_value", "referred_revenue", "predicted_value", "value_p10",
         "value_p90"}
SHARES = {"refund_share", "top_category_share", "peak_season_spend_share", "btyd_p_alive", "horizon_peak_share",
          "topical_share", "topical_share_90d", "p_alive"}
FLAGS = {"was_referred", "has_social_profile"}
LOG1P = {"followers_log", "topical_reach_log"}

REASON = re.compile(r"^(?P<feature>[^=]+)=(?P<value>.*): (?P<sign>[+-])(?P<amount>\d+(?:\.\d+)?)$", re.DOTALL)


def label(feature: str) -> str:
    """The plain-language name of a feature (a customer attribute by its column name)."""
    if feature in LABELS:
        return LABELS[feature]
    if feature.startswith(ATTRIBUTE_PREFIX):
        return f"{feature[len(ATTRIBUTE_PREFIX):].replace('_', ' ').capitalize()} (customer attribute)"
    return feature.replace("_", " ").capitalize()


def family_label(family: str) -> str:
    """The plain-language name of a feature family (a kind of data)."""
    return FAMILY_LABELS.get(family, family.replace("_", " ").capitalize())


def money(amount: float | None, currency: str | None, *, digits: int = 0) -> str:
    """An amount with thousands separators and the currency code in front when known: "EUR 1,234"."""
    if amount is None or not math.isfinite(float(amount)):
        return "–"
    text = f"{float(amount):,.{digits}f}"
    if text.lstrip("-").strip("0.,") == "":
        text = text.lstrip("-")  # no "-0"
    return f"{currency} {text}" if currency else text


def number(value: float) -> str:
    """A count or measure for reading: whole numbers with separators, else two decimals (small ones: 3 digits)."""
    if not math.isfinite(value):
        return "–"
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def feature_value(feature: str, text: str, currency: str | None) -> str:
    """A feature's value as it appears in a reason (machine text), written for reading."""
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        return text
    if feature in FLAGS and value in (0.0, 1.0):
        return "yes" if value == 1.0 else "no"
    if feature in SHARES:
        return f"{100 * value:.0f}%"
    if feature in LOG1P:
        return f"{round(math.expm1(value)):,}"
    if feature in MONEY:
        return money(value, currency, digits=2)
    return number(value)


def plain_reason(reason: str | None, currency: str | None) -> str | None:
    """``net_spend_per_year=1380.19: +210.50`` as "Net spend per year of 1,380.19 raises the value by
    EUR 210.50"; None (no reason) stays None, and text that is not a reason is returned unchanged."""
    if reason is None or (isinstance(reason, float) and math.isnan(reason)):
        return None
    match = REASON.match(str(reason))
    if match is None:
        return str(reason)
    feature, value = match["feature"], match["value"]
    amount = float(match["amount"])
    name = label(feature)
    if value == "missing":
        what = f"{name} not known"
    elif feature in FLAGS or _is_text(value):
        what = f"{name}: {feature_value(feature, value, currency)}"
    else:
        what = f"{name} of {feature_value(feature, value, currency)}"
    if amount == 0:
        return f"{what} does not change the value"
    verb = "lowers" if match["sign"] == "-" else "raises"
    return f"{what} {verb} the value by {money(amount, currency, digits=2)}"


def _is_text(value: str) -> bool:
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return True
