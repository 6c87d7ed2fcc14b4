"""Customer-readable reasons, in English and Italian, for every default and learned preference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.channel_preference import ChannelEstimate
from engine.decision import Reasons
from engine.habits import Rhythm, UsualRequest, ordinal

# Plural nouns for request kinds; unknown kinds get a generic phrase.
_REQUEST_NOUNS: dict[str, tuple[str, str]] = {
    "cash_withdrawal": ("withdrawals", "prelievi"),
    "balance_enquiry": ("balance enquiries", "richieste di saldo"),
    "bill_enquiry": ("bill enquiries", "richieste sulla bolletta"),
    "top_up": ("top-ups", "ricariche"),
    "transfer": ("transfers", "bonifici"),
    "payment": ("payments", "pagamenti"),
    "bill_payment": ("bill payments", "pagamenti"),
}
_GENERIC_NOUN = ("requests of this kind", "richieste di questo tipo")

_CHANNEL_NAMES: dict[str, tuple[str, str]] = {
    "atm": ("ATM", "ATM"),
    "web": ("the website", "il sito web"),
    "mobile_app": ("the mobile app", "l'app"),
    "call_center": ("phone", "telefono"),
    "branch": ("branch", "filiale"),
    "email": ("email", "email"),
    "sms": ("SMS", "SMS"),
    "chat": ("chat", "chat"),
    "social": ("social media", "social"),
    "iot": ("connected devices", "dispositivi connessi"),
}


def request_noun(request: str) -> tuple[str, str]:
    return _REQUEST_NOUNS.get(request, _GENERIC_NOUN)


def channel_name(channel: str) -> tuple[str, str]:
    return _CHANNEL_NAMES.get(channel, (channel, channel))


def describe_values(values: Mapping[str, Any]) -> tuple[str, str]:
    """E.g. ("200 EUR, no receipt", "200 EUR, senza scontrino")."""
    english: list[str] = []
    italian: list[str] = []
    if "amount" in values:
        amount = f"{values['amount']} {values.get('currency', '')}".strip()
        english.append(amount)
        italian.append(amount)
    if "receipt" in values:
        english.append("with receipt" if values["receipt"] else "no receipt")
        italian.append("con scontrino" if values["receipt"] else "senza scontrino")
    for key, value in values.items():
        if key not in ("amount", "currency", "receipt"):
            english.append(f"{key} {value}")
            italian.append(f"{key} {value}")
    return ", ".join(english), ", ".join(italian)


_WEEKDAYS: tuple[tuple[str, str], ...] = (
    ("Mondays", "il lunedì"),
    ("Tuesdays", "il martedì"),
    ("Wednesdays", "il mercoledì"),
    ("Thursdays", "il giovedì"),
    ("Fridays", "il venerdì"),
    ("Saturdays", "il sabato"),
    ("Sundays", "la domenica"),
)


def habit_reasons(habit: UsualRequest) -> Reasons:
    """E.g. "6 of your last 6 withdrawals were 200 EUR, no receipt" (exact repeats), or
    "6 of your last 7 bill payments were about 62 EUR, around the 1st of each month"."""
    noun_en, noun_it = request_noun(habit.request)
    values_en, values_it = describe_values(habit.values)
    about_en, about_it = ("about ", "circa ") if habit.kind == "approximate" else ("", "")
    if "amount" in habit.values:
        verb_it = "erano di circa" if about_it else "erano di"
    else:
        verb_it = "erano circa" if about_it else "erano"
    english = f"{habit.matches} of your last {habit.window} {noun_en} were {about_en}{values_en}"
    italian = f"{habit.matches} dei tuoi ultimi {habit.window} {noun_it} {verb_it} {values_it}"
    if habit.timed and habit.rhythm is not None:
        when_en, when_it = rhythm_phrase(habit.rhythm)
        english, italian = f"{english}, {when_en}", f"{italian}, {when_it}"
    return Reasons(en=english, it=italian)


def rhythm_phrase(rhythm: Rhythm) -> tuple[str, str]:
    """E.g. ("around the 1st of each month", "intorno al giorno 1 di ogni mese")."""
    if rhythm.period == "monthly":
        return (
            f"around the {ordinal(rhythm.day)} of each month",
            f"intorno al giorno {rhythm.day} di ogni mese",
        )
    return f"on {_WEEKDAYS[rhythm.day][0]}", _WEEKDAYS[rhythm.day][1]


def habit_status_reasons(
    habit: UsualRequest,
    status: str,
    *,
    config_min_count: int,
    config_min_share: float,
    acceptance: float | None = None,
    threshold: float | None = None,
    requested: str | None = None,
) -> Reasons:
    """Why a habit considered at a touchpoint was, or was not, offered as a default."""
    if status == "offered":
        return habit_reasons(habit)
    noun_en, noun_it = request_noun(habit.request)
    if status == "below_count":
        return Reasons(
            en=f"Not offered: {habit.matches} of your last {habit.window} {noun_en} match, "
            f"at least {config_min_count} needed",
            it=f"Non proposto: {habit.matches} dei tuoi ultimi {habit.window} {noun_it} "
            f"coincidono, ne servono almeno {config_min_count}",
        )
    if status == "below_share":
        need = _percent(config_min_share)
        return Reasons(
            en=f"Not offered: {habit.matches} of your last {habit.window} {noun_en} match, "
            f"less than {need}%",
            it=f"Non proposto: {habit.matches} dei tuoi ultimi {habit.window} {noun_it} "
            f"coincidono, meno del {need}%",
        )
    if status == "suppressed_after_declines":
        return Reasons(
            en=f"Not offered: you declined it {habit.declines} times since you last accepted it",
            it=f"Non proposto: l'hai rifiutato {habit.declines} volte dall'ultima volta che "
            "l'hai accettato",
        )
    if status == "below_acceptance":
        p, t = _percent(acceptance or 0.0), _percent(threshold or 0.0)
        return Reasons(
            en=f"Not offered: the model expects it accepted with probability {p}%, "
            f"below the threshold of {t}%",
            it=f"Non proposto: il modello stima una probabilità di accettazione del {p}%, "
            f"sotto la soglia del {t}%",
        )
    if status == "filtered_by_request":
        asked_en, asked_it = request_noun(requested or "")
        return Reasons(
            en=f"Not offered: this touchpoint asked only for {asked_en}",
            it=f"Non proposto: questo punto di contatto ha chiesto solo {asked_it}",
        )
    if status == "not_due":
        when_en, when_it = rhythm_phrase(habit.rhythm) if habit.rhythm else ("", "")
        return Reasons(
            en=f"Not offered: not due yet (usually {when_en})",
            it=f"Non proposto: non ancora il momento (di solito {when_it})",
        )
    return Reasons(en=f"Not offered: {status}", it=f"Non proposto: {status}")


def stated_override_reasons(key: str, value: Any) -> Reasons:
    """A stated preference that changed a default's values."""
    if key == "receipt":
        return Reasons(
            en="You asked for a paper receipt" if value else "You asked for no paper receipt",
            it="Hai chiesto lo scontrino" if value else "Hai chiesto di non ricevere lo scontrino",
        )
    return Reasons(
        en=f"You told us your preference for {key}: {value}",
        it=f"Ci hai indicato la tua preferenza per {key}: {value}",
    )


def join_reasons(parts: list[Reasons]) -> Reasons:
    return Reasons(en="; ".join(p.en for p in parts), it="; ".join(p.it for p in parts))


def _percent(probability: float) -> int:
    return round(100 * probability)


def contact_channel_reasons(choice: ChannelEstimate) -> Reasons:
    name_en, name_it = channel_name(choice.channel)
    share = _percent(choice.probability)
    if choice.source == "stated":
        return Reasons(
            en=f"You told us you prefer to be contacted by {name_en}",
            it=f"Ci hai detto che preferisci essere contattato via {name_it}",
        )
    if choice.source == "population":
        return Reasons(
            en=f"Customers most often choose {name_en} (we do not know your preference yet)",
            it=f"I clienti scelgono più spesso {name_it} (non conosciamo ancora la tua preferenza)",
        )
    if choice.probability >= 0.5:
        return Reasons(
            en=f"You chose {name_en} for most of your recent contacts (about {share}%)",
            it=f"Hai scelto {name_it} per la maggior parte dei tuoi contatti recenti "
            f"(circa {share}%)",
        )
    return Reasons(
        en=f"You seem to prefer {name_en} for contacts, though not strongly (about {share}%)",
        it=f"Sembri preferire {name_it} per i contatti, ma non nettamente (circa {share}%)",
    )


def request_channel_reasons(request: str, choice: ChannelEstimate) -> Reasons:
    noun_en, noun_it = request_noun(request)
    name_en, name_it = channel_name(choice.channel)
    share = _percent(choice.probability)
    return Reasons(
        en=f"You usually make {noun_en} on {name_en} (about {share}%)",
        it=f"Di solito fai {noun_it} tramite {name_it} (circa {share}%)",
    )


_PROBLEM_REASONS: dict[str, tuple[str, str]] = {
    "complaint": ("you have an open complaint with us", "hai un reclamo aperto con noi"),
    "failed_payment": (
        "a recent payment of yours did not go through",
        "un tuo pagamento recente non è andato a buon fine",
    ),
    "outage": ("a service disruption affects you", "un disservizio ti riguarda"),
    "low_feedback": (
        "you recently told us you were not satisfied",
        "di recente ci hai detto che non eri soddisfatto",
    ),
}


def action_reasons(addressed: list[str], propensity: float) -> Reasons:
    """Why an action is suggested: the open problems it addresses, or its expected fit."""
    if addressed:
        english = " and ".join(_PROBLEM_REASONS[p][0] for p in addressed if p in _PROBLEM_REASONS)
        italian = " e ".join(_PROBLEM_REASONS[p][1] for p in addressed if p in _PROBLEM_REASONS)
        return Reasons(en=f"Because {english}", it=f"Perché {italian}")
    share = _percent(propensity)
    if share < 5:  # a small share says little to a customer
        return Reasons(
            en="Suggested for you from your recent activity",
            it="Suggerito per te in base alla tua attività recente",
        )
    return Reasons(
        en=f"Suggested for you: about {share}% of customers like you take it up",
        it=f"Suggerito per te: circa il {share}% dei clienti come te lo sceglie",
    )
