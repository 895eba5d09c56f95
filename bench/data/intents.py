"""A labelled intent set, generated deterministically: 24 banking and account intents,
each phrased by 8 templates with slots, polite openers and closers.

Two held-out splits: *unseen* is made of templates the training split never saw (the last
two of each intent), with slot values drawn afresh: it measures how a classifier
generalises to a new way of saying the same thing, not how well it remembers word
patterns. *seen* is new utterances from the training templates (none in the training split):
the easy case, where word overlap alone does well.

`python -m bench.data.intents OUT.json` writes the whole set as HumanFirst JSON.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass

SEED = 20240611
TRAIN_PER_INTENT = 45
TEST_PER_INTENT = 15
SEEN_TEST_PER_INTENT = 10
HELD_OUT_TEMPLATES = 2

SLOTS = {
    "card": ["card", "debit card", "credit card", "visa", "mastercard", "bank card"],
    "account": ["account", "checking account", "savings account", "current account"],
    "amount": ["50 dollars", "$200", "100 euros", "a thousand pounds", "twenty bucks", "$75"],
    "person": ["my sister", "John", "my landlord", "a friend", "my mom", "Maria"],
    "day": ["yesterday", "last week", "on monday", "two days ago", "this morning"],
    "place": ["the airport", "a supermarket", "an ATM", "a gas station", "online"],
    "country": ["France", "Japan", "Mexico", "Canada", "Spain", "Brazil"],
}
OPENERS = ["", "", "", "hi, ", "hello, ", "hey ", "excuse me, ", "quick question: ", "um "]
CLOSERS = ["", "", "", " please", " thanks", "?", " asap", " thank you", " right now"]

INTENTS: dict[str, list[str]] = {
    "card_lost": [
        "i lost my {card}",
        "i can't find my {card} anywhere",
        "my {card} is missing",
        "i think i dropped my {card} at {place}",
        "where do i report a lost {card}",
        "misplaced my {card} {day}",
        "my {card} has gone, i have no idea where it is",
        "i no longer have my {card} with me, it vanished",
    ],
    "card_stolen": [
        "my {card} was stolen",
        "someone stole my {card} {day}",
        "a thief took my {card}",
        "my wallet with my {card} got stolen at {place}",
        "report a stolen {card}",
        "i was robbed and they took my {card}",
        "somebody pickpocketed my {card}",
        "my purse was snatched and the {card} was in it",
    ],
    "card_activate": [
        "how do i activate my new {card}",
        "activate my {card}",
        "i received my {card}, turn it on",
        "my new {card} needs activating",
        "start using the {card} i just got",
        "set up the {card} that arrived {day}",
        "the {card} in the mail isn't working yet",
        "enable the card you sent me",
    ],
    "card_declined": [
        "my {card} was declined",
        "why was my {card} refused at {place}",
        "payment with my {card} did not go through",
        "the {card} keeps getting rejected",
        "my {card} got declined {day}",
        "transaction denied on my {card}",
        "the shop said my card doesn't work",
        "the terminal would not accept my payment",
    ],
    "pin_change": [
        "i want to change my pin",
        "how do i reset the pin of my {card}",
        "update my {card} pin",
        "set a new pin",
        "i forgot my pin",
        "change the pin number on my {card}",
        "i need a different four digit code for my card",
        "my code for the card needs replacing",
    ],
    "balance": [
        "what is my balance",
        "how much money is in my {account}",
        "show my {account} balance",
        "check my balance",
        "how much do i have left in my {account}",
        "balance of my {account}",
        "am i in the red right now",
        "tell me what funds i have available",
    ],
    "transfer": [
        "transfer {amount} to {person}",
        "send {amount} to my {account}",
        "move {amount} to {person}",
        "i want to wire {amount} to {person}",
        "make a transfer of {amount}",
        "pay {person} {amount} from my {account}",
        "get {amount} over to {person} today",
        "shift some cash from one account to another",
    ],
    "transfer_failed": [
        "my transfer to {person} failed",
        "the transfer of {amount} did not go through",
        "why did my transfer fail",
        "transfer to {person} was rejected {day}",
        "money i sent {day} never arrived",
        "my wire of {amount} bounced back",
        "{person} says the money never showed up",
        "the payment i made came back to me",
    ],
    "exchange_rate": [
        "what is the exchange rate for {country}",
        "how much is a euro in dollars",
        "currency rate for {country}",
        "exchange rate today",
        "what rate do you give for yen",
        "how many pesos do i get for {amount}",
        "is it a good time to convert my money",
        "what would {amount} be worth in local money",
    ],
    "travel_notice": [
        "i'm travelling to {country}",
        "let you know i'll be in {country} next week",
        "set a travel notice for {country}",
        "going abroad to {country}, will my {card} work",
        "i will use my {card} in {country}",
        "notify the bank of my trip to {country}",
        "heading overseas soon, don't block my payments",
        "i'll be on holiday outside the country",
    ],
    "atm_cash_missing": [
        "the atm didn't give me my cash",
        "i withdrew {amount} but got nothing",
        "atm took my money and no cash came out",
        "cash not dispensed at {place}",
        "the machine ate my withdrawal {day}",
        "i was charged for a withdrawal i never got",
        "the cash machine kept the notes",
        "no bills came out but my account was debited",
    ],
    "refund": [
        "i want a refund",
        "how do i get my money back for a purchase",
        "request a refund of {amount}",
        "the merchant owes me a refund",
        "refund my payment",
        "i returned an item and want the {amount} back",
        "reverse the charge from the shop",
        "get back what i paid for the cancelled order",
    ],
    "unknown_charge": [
        "there's a charge i don't recognize",
        "what is this payment of {amount}",
        "i didn't make this transaction",
        "unknown charge on my {card} {day}",
        "who charged me {amount}",
        "strange payment on my {account}",
        "i see a debit i never authorised",
        "something on my statement isn't mine",
    ],
    "close_account": [
        "close my {account}",
        "i want to close my account",
        "how do i shut down my {account}",
        "cancel my {account}",
        "terminate my account with you",
        "delete my {account}",
        "i'm leaving the bank for good",
        "end my relationship with this bank",
    ],
    "open_account": [
        "open a new {account}",
        "i want to open an account",
        "how do i create a {account}",
        "sign me up for a {account}",
        "start a {account} for me",
        "can i get a second {account}",
        "i'd like to become a customer",
        "register me as a new client",
    ],
    "change_address": [
        "i moved, update my address",
        "change my address",
        "how do i update my home address",
        "new address for my {account}",
        "i have a new place, change my details",
        "update where you send my {card}",
        "i relocated last month",
        "my street and city are different now",
    ],
    "password_reset": [
        "reset my password",
        "i forgot my password",
        "can't log in, forgot my password",
        "how do i change my online banking password",
        "password reset for the app",
        "i need a new password",
        "locked out of the website",
        "the app won't let me sign in",
    ],
    "statement": [
        "send me my statement",
        "i need a bank statement for {day}",
        "download my {account} statement",
        "where can i get my monthly statement",
        "statement for my {account}",
        "print my transaction history",
        "a record of everything i spent last month",
        "list of my past payments in a pdf",
    ],
    "loan_apply": [
        "i want to apply for a loan",
        "can i borrow {amount}",
        "loan application",
        "how do i get a personal loan",
        "apply for a mortgage",
        "i need a loan of {amount}",
        "could you lend me money for a car",
        "financing options for a new kitchen",
    ],
    "interest_rate": [
        "what is the interest rate on my {account}",
        "savings interest rate",
        "how much interest do you pay",
        "what rate do loans have",
        "interest on a {account}",
        "current interest rates",
        "what percentage will my deposit earn",
        "how much does borrowing cost per year",
    ],
    "direct_debit": [
        "set up a direct debit",
        "cancel a direct debit to {person}",
        "my direct debits",
        "stop the automatic payment to {person}",
        "change a direct debit",
        "direct debit failed",
        "my gym keeps taking money automatically",
        "the recurring payment needs to stop",
    ],
    "contact_human": [
        "talk to a human",
        "i want to speak to an agent",
        "connect me to customer service",
        "can i call someone",
        "real person please",
        "get me a representative",
        "is there anybody i can phone",
        "i'd rather chat with staff than a bot",
    ],
    "fees": [
        "what fees do you charge",
        "why was i charged a fee",
        "monthly fee on my {account}",
        "how much does a transfer cost",
        "fee for using my {card} in {country}",
        "are there charges for withdrawals",
        "what does the account cost me each month",
        "hidden costs of the card",
    ],
    "card_limit": [
        "increase my {card} limit",
        "what is my spending limit",
        "raise the limit on my {card}",
        "my {card} limit is too low",
        "change my withdrawal limit",
        "limit of my {card}",
        "i want to spend more per day",
        "can the maximum per purchase go up",
    ],
}


@dataclass(frozen=True)
class Utterance:
    text: str
    intent: str


def _fill(template: str, rng: random.Random) -> str:
    text = template
    for slot, values in SLOTS.items():
        while "{" + slot + "}" in text:
            text = text.replace("{" + slot + "}", rng.choice(values), 1)
    text = rng.choice(OPENERS) + text + rng.choice(CLOSERS)
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def _phrase(templates: list[str], count: int, rng: random.Random) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for _ in range(count * 50):
        if len(out) == count:
            break
        text = _fill(rng.choice(templates), rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def generate(seed: int = SEED) -> tuple[list[Utterance], list[Utterance], list[Utterance]]:
    """(train, unseen held out, seen held out), the same every run."""
    rng = random.Random(seed)
    train: list[Utterance] = []
    unseen_test: list[Utterance] = []
    seen_test: list[Utterance] = []
    for intent, templates in INTENTS.items():
        seen_templates = templates[:-HELD_OUT_TEMPLATES]
        unseen = templates[-HELD_OUT_TEMPLATES:]
        seen = _phrase(seen_templates, TRAIN_PER_INTENT + SEEN_TEST_PER_INTENT, rng)
        train += [Utterance(t, intent) for t in seen[:TRAIN_PER_INTENT]]
        seen_test += [Utterance(t, intent) for t in seen[TRAIN_PER_INTENT:]]
        unseen_test += [Utterance(t, intent) for t in _phrase(unseen, TEST_PER_INTENT, rng)]
    return train, unseen_test, seen_test


def to_hf_json(utterances: list[Utterance]) -> dict[str, object]:
    """HumanFirst JSON: intents with ids, examples pointing at them."""
    intents = sorted({u.intent for u in utterances})
    return {
        "$schema": "https://docs.humanfirst.ai/hf-json-schema.json",
        "intents": [{"id": f"intent-{name}", "name": name} for name in intents],
        "examples": [
            {"id": f"phrase-{i}", "text": u.text, "intents": [{"intent_id": f"intent-{u.intent}"}]}
            for i, u in enumerate(utterances)
        ],
    }


if __name__ == "__main__":
    train_set, unseen_set, seen_set = generate()
    path = sys.argv[1] if len(sys.argv) > 1 else "intents.json"
    with open(path, "w") as out:
        json.dump(to_hf_json(train_set + unseen_set + seen_set), out, indent=1)
    print(
        f"{len(train_set)} training, {len(unseen_set)} + {len(seen_set)} held-out utterances"
        f" -> {path}"
    )
