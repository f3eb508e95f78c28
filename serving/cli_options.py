"""The options several clv verbs share: how exports write values, the source's names, the currency."""

from __future__ import annotations

import typer


def decimal_option():
    return typer.Option(None, "--decimal", help="Decimal mark of numbers the export writes as text: "
                        "'.', ',' or auto (detected per column; refused when ambiguous). Default: auto, or the "
                        "model's when scoring.")


def max_amount_option():
    return typer.Option(None, "--max-amount", help="Amounts and margins beyond this (absolute) are rejected as "
                        "implausible. Default: 1e9, or the model's when scoring.")


def currency_option(default: str):
    return typer.Option(None, "--currency", help=f"Currency of the amounts, e.g. EUR or $: labels money (default: "
                        f"{default}).")


def mapping_option():
    return typer.Option(None, "--mapping", help="JSON or TOML file naming the source's tables and columns that "
                        "differ from the contract (a database's, or a directory's files).")
