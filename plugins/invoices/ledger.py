"""Pure bookkeeping: money and date parsing, balances, invoice status on any date, client status
and payment rating, ledger lines and the overdue report. No I/O here: `service.py` loads rows and
hands them over as `InvoiceFacts`.

Money is `Decimal` with two places, always paired with an ISO 4217 currency; floats are refused
except as tool input, where they are read through `repr` (100.1 → Decimal("100.1")), never through
binary arithmetic.

An invoice's state on day D follows from dates alone, so any past day can be answered exactly:

- it does not exist before its `issued` date;
- it is `void` from the effective date of its void event on;
- otherwise its open balance is `amount - sum(payments with paid_on <= D)`, and it is `paid`
  (balance 0), `overdue` (balance > 0 and `due < D`), `partially_paid` (something paid) or
  `unpaid`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from clara.plugin_api import PluginError

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("999999999999.99")  # Numeric(14, 2)
STATUSES = ("unpaid", "partially_paid", "paid", "overdue", "void")
CLIENT_STATUSES = ("active", "overdue", "blacklist")
MONEY_EXAMPLES = "e.g. $320, 320.50 EUR or 1.234,56 €"

# Active ISO 4217 codes (2026), so "320 abc" is an error rather than a currency called ABC.
ISO_4217 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN
    BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP
    GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD
    KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK
    NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD
    SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD
    XCG XOF XPF YER ZAR ZMW ZWG""".split()
)
SYMBOLS = {
    "$": "USD",
    "US$": "USD",
    "€": "EUR",
    "£": "GBP",
    "¥": "JPY",
    "₹": "INR",
    "A$": "AUD",
    "AU$": "AUD",
    "C$": "CAD",
    "CA$": "CAD",
    "NZ$": "NZD",
    "R$": "BRL",
    "CHF": "CHF",
    "₩": "KRW",
    "₺": "TRY",
    "zł": "PLN",
}
WORDS = {
    "dollar": "USD",
    "dollars": "USD",
    "bucks": "USD",
    "euro": "EUR",
    "euros": "EUR",
    "pound": "GBP",
    "pounds": "GBP",
}
DISPLAY = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}
_NUMBER = re.compile(r"(?P<pre>.*?)(?P<num>\d(?:[\d.,' ]*\d)?)(?P<post>[^\d]*)")
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")


# ----------------------------------------------------------------------------------------- money
def check_currency(code: str) -> str:
    """The ISO 4217 code `code` (any case), or PluginError."""
    c = str(code or "").strip().upper()
    if c not in ISO_4217:
        raise PluginError(f"{code!r} is not an ISO 4217 currency code (e.g. USD, EUR, GBP)")
    return c


def _currency_marker(marker: str, text: str) -> str | None:
    m = marker.strip()
    if not m:
        return None
    if m in SYMBOLS:
        return SYMBOLS[m]
    if m.upper() in ISO_4217:
        return m.upper()
    if m.lower() in WORDS:
        return WORDS[m.lower()]
    raise PluginError(f"couldn't read {text!r} as an amount: unknown currency {m!r} ({MONEY_EXAMPLES})")


def _normalise_number(num: str, text: str) -> Decimal:
    """'1.234,56' / '1,234.56' / '1234.5' / "1'234.50" → Decimal; thousands groups must be valid."""
    bad = PluginError(f"couldn't read {text!r} as an amount ({MONEY_EXAMPLES})")
    s = num.replace(" ", "").replace("'", "")
    dots, commas = s.count("."), s.count(",")
    sep_dec: str | None = None
    sep_thou: str | None = None
    if dots and commas:
        sep_dec = "." if s.rfind(".") > s.rfind(",") else ","
        sep_thou = "," if sep_dec == "." else "."
        if s.count(sep_dec) > 1:
            raise bad
    elif commas:
        if commas == 1 and len(s.split(",")[1]) != 3:
            sep_dec = ","
        else:
            sep_thou = ","
    elif dots:
        if dots == 1:
            sep_dec = "."
        else:
            sep_thou = "."
    whole, frac = (s.rsplit(sep_dec, 1) + [""])[:2] if sep_dec else (s, "")
    if sep_thou and sep_thou in whole:
        groups = whole.split(sep_thou)
        if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
            raise bad
        whole = "".join(groups)
    if not whole.isdigit() or (frac and not frac.isdigit()) or (sep_dec and not frac):
        raise bad
    return Decimal(f"{whole}.{frac}" if frac else whole)


def parse_money(value: object, default_currency: str | None = None) -> tuple[Decimal, str]:
    """Read an amount with its currency: "$320", "320.50 EUR", "EUR 320.50", "1.234,56 €",
    "1,234.56", "320 dollars"; a bare number takes `default_currency`. Ints/Decimals are taken
    as they are; floats (JSON tool input) through their shortest repr.

    Raises PluginError for negative, zero, NaN/infinite, unreadable, over-large amounts, more
    than two decimal places, an unknown currency or two different currencies."""
    if isinstance(value, bool) or value is None:
        raise PluginError(f"couldn't read {value!r} as an amount ({MONEY_EXAMPLES})")
    currency: str | None = None
    shown = str(value)
    if isinstance(value, Decimal | int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    else:
        text = unicodedata.normalize("NFKC", str(value)).replace("−", "-").strip()
        shown = text
        if not text:
            raise PluginError(f"an amount is required ({MONEY_EXAMPLES})")
        negative = False
        if text.startswith("(") and text.endswith(")"):
            negative, text = True, text[1:-1].strip()
        m = _NUMBER.fullmatch(text)
        if m is None:
            raise PluginError(f"couldn't read {shown!r} as an amount ({MONEY_EXAMPLES})")
        pre, post = m["pre"].strip(), m["post"].strip()
        for part in (pre, post):
            if "-" in part:
                negative = True
        pre, post = pre.replace("-", "").replace("+", "").strip(), post.replace("-", "").strip()
        if negative:
            raise PluginError(f"the amount must be positive (got {shown!r})")
        c1, c2 = _currency_marker(pre, shown), _currency_marker(post, shown)
        if c1 and c2 and c1 != c2:
            raise PluginError(f"{shown!r} names two currencies ({c1} and {c2})")
        currency = c1 or c2
        amount = _normalise_number(m["num"], shown)
    if not amount.is_finite():
        raise PluginError(f"couldn't read {shown!r} as an amount ({MONEY_EXAMPLES})")
    if amount < 0:
        raise PluginError(f"the amount must be positive (got {shown!r})")
    if amount == 0:
        raise PluginError(f"the amount must be more than zero (got {shown!r})")
    if amount > MAX_AMOUNT:  # checked first: quantizing a huge number overflows the decimal context
        raise PluginError(f"{shown!r} is too large (at most {MAX_AMOUNT:,})")
    if amount != amount.quantize(CENT, rounding=ROUND_HALF_UP):
        raise PluginError(f"{shown!r} has more than 2 decimal places")
    currency = currency or (check_currency(default_currency) if default_currency else None)
    if currency is None:
        raise PluginError(f"which currency is {shown!r} in? Add a code or symbol ({MONEY_EXAMPLES})")
    return amount.quantize(CENT), currency


def to_decimal(value: object) -> Decimal:
    """A stored amount (Decimal, or int/float/str from a driver) as a two-place Decimal."""
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, float):
        d = Decimal(repr(value))
    else:
        d = Decimal(str(value))
    return d.quantize(CENT, rounding=ROUND_HALF_UP)


def format_money(amount: Decimal, currency: str) -> str:
    """$1,234.50 / €20.00 / 15.00 CHF (negative amounts as -$5.00)."""
    sign = "-" if amount < 0 else ""
    body = format(abs(amount).quantize(CENT), ",.2f")
    symbol = DISPLAY.get(currency)
    return f"{sign}{symbol}{body}" if symbol else f"{sign}{body} {currency}"


def format_amounts(amounts: dict[str, Decimal]) -> str:
    """Several currencies: "$320.00 and €50.00" (zero amounts left out; "nothing" if none)."""
    parts = [format_money(v, c) for c, v in sorted(amounts.items()) if v]
    if not parts:
        return "nothing"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ----------------------------------------------------------------------------------------- dates
def parse_date(value: object, now: datetime | date) -> date:
    """A calendar date from "2026-10-01", "today", "yesterday", "in 30 days", "Nov 2", "next
    friday"… (dateparser, relative to `now`). Raises PluginError for impossible or unreadable
    dates such as 2026-02-30."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value or "").strip()
    if not text:
        raise PluginError("a date is required (e.g. 2026-10-01, today, in 30 days)")
    m = _ISO_DATE.fullmatch(text)
    if m:
        try:
            return date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError as exc:
            raise PluginError(f"{text} is not a real date ({exc})") from None
    base = now if isinstance(now, datetime) else datetime(now.year, now.month, now.day)
    import dateparser  # lazily: ISO dates (the common case) don't pay for its import

    parsed = dateparser.parse(
        text,
        languages=["en"],
        settings={
            "RELATIVE_BASE": base.replace(tzinfo=None),
            "RETURN_AS_TIMEZONE_AWARE": False,
            "PREFER_DAY_OF_MONTH": "first",
        },
    )
    if parsed is None:
        raise PluginError(f"couldn't understand the date {text!r} (e.g. 2026-10-01, today, in 30 days)")
    if not 1970 <= parsed.year <= 2200:
        raise PluginError(f"{text!r} is not a plausible invoice date ({parsed.date()})")
    return parsed.date()


def today_of(now: datetime | date) -> date:
    return now.date() if isinstance(now, datetime) else now


# ------------------------------------------------------------------------------------- invoices
@dataclass(frozen=True, slots=True)
class Payment:
    amount: Decimal
    paid_on: date
    method: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    """Everything needed to know an invoice's state on any day."""

    number: str
    amount: Decimal
    currency: str
    issued: date
    due: date
    payments: tuple[Payment, ...] = ()
    voided_on: date | None = None
    client: str = ""
    id: int | None = None


def paid_as_of(inv: InvoiceFacts, day: date | None = None) -> Decimal:
    """Sum of the payments made on or before `day` (all of them when day is None)."""
    return sum((p.amount for p in inv.payments if day is None or p.paid_on <= day), Decimal("0.00"))


def balance(amount: Decimal, payments: Iterable[Payment | Decimal]) -> Decimal:
    """What is still open on an invoice of `amount` after `payments` (partial payments add up
    exactly). Raises PluginError if the payments exceed the amount."""
    paid = sum((p.amount if isinstance(p, Payment) else p for p in payments), Decimal("0.00"))
    left = amount - paid
    if left < 0:
        raise PluginError(
            f"payments of {paid:,.2f} are more than the invoice amount {amount:,.2f} (overpaid by {-left:,.2f})"
        )
    return left.quantize(CENT)


def open_balance(inv: InvoiceFacts, day: date | None = None) -> Decimal:
    """What the client owed on this invoice at the end of `day` (0 before issue and once void)."""
    if day is not None and day < inv.issued:
        return Decimal("0.00")
    if inv.voided_on is not None and (day is None or inv.voided_on <= day):
        return Decimal("0.00")
    return balance(inv.amount, [p for p in inv.payments if day is None or p.paid_on <= day])


def invoice_status(inv: InvoiceFacts, day: date) -> str | None:
    """The invoice's status at the end of `day`, from its dates and payment history; None if it
    had not been issued yet. Overdue means an open balance and a due date before `day`."""
    if day < inv.issued:
        return None
    if inv.voided_on is not None and inv.voided_on <= day:
        return "void"
    paid = paid_as_of(inv, day)
    left = balance(inv.amount, [paid])
    if left == 0:
        return "paid"
    if inv.due < day:
        return "overdue"
    return "partially_paid" if paid > 0 else "unpaid"


def days_overdue(inv: InvoiceFacts, day: date) -> int:
    return (day - inv.due).days if invoice_status(inv, day) == "overdue" else 0


def settled_on(inv: InvoiceFacts) -> date | None:
    """The day the payments first covered the whole amount (None if never)."""
    total = Decimal("0.00")
    for p in sorted(inv.payments, key=lambda p: (p.paid_on, p.id or 0)):
        total += p.amount
        if total >= inv.amount:
            return p.paid_on
    return None


def check_new_invoice(amount: Decimal, issued: date, due: date) -> None:
    if due < issued:
        raise PluginError(f"the due date {due} is before the issue date {issued}")
    if amount <= 0:
        raise PluginError("the amount must be more than zero")


def check_payment(inv: InvoiceFacts, amount: Decimal, currency: str, paid_on: date, today: date) -> Decimal:
    """Validate a new payment; returns the balance left after it. Raises PluginError for a void
    or settled invoice, another currency, a date before issue or in the future, or overpayment."""
    if inv.voided_on is not None:
        raise PluginError(f"invoice {inv.number} is void; it can't take payments")
    if currency != inv.currency:
        raise PluginError(f"invoice {inv.number} is in {inv.currency}, not {currency}")
    if paid_on > today:
        raise PluginError(f"the payment date {paid_on} is in the future")
    if paid_on < inv.issued:
        raise PluginError(f"the payment date {paid_on} is before invoice {inv.number} was issued ({inv.issued})")
    left = open_balance(inv)
    if left == 0:
        raise PluginError(f"invoice {inv.number} is already paid in full")
    if amount > left:
        raise PluginError(
            f"{format_money(amount, currency)} is more than the open balance of invoice {inv.number} "
            f"({format_money(left, currency)}); overpayments aren't recorded"
        )
    return left - amount


# --------------------------------------------------------------------------------------- clients
def norm_name(name: str) -> str:
    """The key a client is unique by (per owner): case, accents and punctuation folded —
    "Claudia Alz", "claudia  alz" and "Cláudia-Alz" are the same client ("claudia-alz")."""
    folded = unicodedata.normalize("NFKD", str(name)).casefold()
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return re.sub(r"[\W_]+", "-", folded).strip("-")


@dataclass(frozen=True, slots=True)
class Rating:
    """Payment rating: of the invoices whose due date has passed (or that were settled), how
    many were paid in full by their due date. `share` is None when nothing counts yet."""

    on_time: int
    counted: int

    @property
    def share(self) -> Decimal | None:
        return None if not self.counted else (Decimal(self.on_time) / Decimal(self.counted)).quantize(CENT)

    def describe(self) -> str:
        if not self.counted:
            return "no rating yet"
        pct = (Decimal(100) * self.on_time / self.counted).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        return f"{pct}% paid on time ({self.on_time} of {self.counted})"


def payment_rating(invoices: Sequence[InvoiceFacts], day: date) -> Rating:
    """Count, as of `day`, the non-void invoices that are settled or past due; on time = settled
    on or before the due date. Invoices not yet due and still open don't count either way."""
    on_time = counted = 0
    for inv in invoices:
        status = invoice_status(inv, day)
        if status in (None, "void"):
            continue
        settled = settled_on(inv)
        if settled is not None and settled <= day:
            counted += 1
            on_time += settled <= inv.due
        elif inv.due < day:
            counted += 1
    return Rating(on_time, counted)


def client_status(override: str | None, invoices: Sequence[InvoiceFacts], day: date) -> str:
    """The override when set (active/overdue/blacklist); otherwise overdue if any invoice is
    overdue on `day`, else active."""
    if override:
        return override
    return "overdue" if any(invoice_status(i, day) == "overdue" for i in invoices) else "active"


def owed_by_currency(invoices: Iterable[InvoiceFacts], day: date | None = None) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for inv in invoices:
        left = open_balance(inv, day)
        if left:
            out[inv.currency] = out.get(inv.currency, Decimal("0.00")) + left
    return out


def paid_by_currency(invoices: Iterable[InvoiceFacts], day: date | None = None) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for inv in invoices:
        paid = paid_as_of(inv, day)
        if paid:
            out[inv.currency] = out.get(inv.currency, Decimal("0.00")) + paid
    return out


# ---------------------------------------------------------------------------------------- ledger
@dataclass(frozen=True, slots=True)
class Entry:
    day: date
    kind: str  # invoice | payment | void
    ref: str
    text: str
    currency: str
    change: Decimal  # + raises what is owed, - lowers it
    balance: Decimal  # running balance in this currency after the entry


def ledger_entries(invoices: Sequence[InvoiceFacts], until: date | None = None) -> list[Entry]:
    """A client's account, oldest first: each invoice (+amount), payment (-amount) and void
    (-what was still open), with a running balance per currency. Same-day order: invoices,
    then payments, then voids."""
    raw: list[tuple[date, int, int, str, str, str, str, Decimal]] = []
    for inv in invoices:
        raw.append(
            (inv.issued, 0, inv.id or 0, "invoice", inv.number, f"invoice {inv.number}", inv.currency, inv.amount)
        )
        for p in inv.payments:
            how = f" by {p.method}" if p.method else ""
            raw.append(
                (
                    p.paid_on,
                    1,
                    p.id or 0,
                    "payment",
                    inv.number,
                    f"payment on {inv.number}{how}",
                    inv.currency,
                    -p.amount,
                )
            )
        if inv.voided_on is not None:
            left = balance(inv.amount, [p for p in inv.payments if p.paid_on <= inv.voided_on])
            raw.append(
                (inv.voided_on, 2, inv.id or 0, "void", inv.number, f"invoice {inv.number} voided", inv.currency, -left)
            )
    raw.sort(key=lambda r: (r[0], r[1], r[2]))
    running: dict[str, Decimal] = {}
    out = []
    for day, _, _, kind, ref, text, cur, change in raw:
        if until is not None and day > until:
            break
        running[cur] = running.get(cur, Decimal("0.00")) + change
        out.append(Entry(day, kind, ref, text, cur, change, running[cur]))
    return out


# ------------------------------------------------------------------------------- overdue report
@dataclass(slots=True)
class OverdueClient:
    name: str
    owed: dict[str, Decimal] = field(default_factory=dict)
    invoices: list[tuple[str, Decimal, str, int]] = field(default_factory=list)  # number, open, currency, days
    status_override: str | None = None

    @property
    def max_days(self) -> int:
        return max((d for *_, d in self.invoices), default=0)

    def describe(self) -> str:
        items = "; ".join(f"{n}: {format_money(a, c)}, {d} days overdue" for n, a, c, d in self.invoices)
        tag = " [blacklisted]" if self.status_override == "blacklist" else ""
        return f"{self.name}{tag} owes {format_amounts(self.owed)} ({items})"


def overdue_report(clients: Iterable[tuple[str, str | None, Sequence[InvoiceFacts]]], day: date) -> list[OverdueClient]:
    """The clients with at least one invoice overdue at the end of `day` — (name, status
    override, invoices) in, most overdue first out. Exact for past days: only payments made by
    then and voids effective by then count."""
    out = []
    for name, override, invoices in clients:
        row = OverdueClient(name, status_override=override)
        for inv in invoices:
            if invoice_status(inv, day) == "overdue":
                left = open_balance(inv, day)
                row.invoices.append((inv.number, left, inv.currency, (day - inv.due).days))
                row.owed[inv.currency] = row.owed.get(inv.currency, Decimal("0.00")) + left
        if row.invoices:
            row.invoices.sort(key=lambda t: (-t[3], t[0]))
            out.append(row)
    out.sort(key=lambda r: (-r.max_days, r.name.casefold()))
    return out
