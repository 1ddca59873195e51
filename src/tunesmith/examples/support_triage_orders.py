"""The support-triage problem templates about money and deliveries: billing, shipping and refund. Pure data;
``support_triage_problems.py`` puts every category together."""

from __future__ import annotations

from tunesmith.examples.support_triage_vocab import ANY, HW, SW, Problem

ORDER_PROBLEMS: dict[str, tuple[Problem, ...]] = {
    "billing": (
        Problem(
            "double charge on monthly invoice",
            ANY,
            (
                "I was charged twice for my {product} subscription this month, two payments of {amount} on {date}.",
                "My bank statement shows the same {product} charge of {amount} two times on {date}.",
            ),
        ),
        Problem(
            "wrong plan price on invoice",
            SW,
            (
                "My latest {product} invoice says {amount}, but the {plan} plan I signed up for costs less than that.",
                "The {product} invoice from {date} bills me {amount}, which is not the price of my {plan} plan.",
            ),
        ),
        Problem(
            "card declined when renewing subscription",
            SW,
            (
                "My card keeps getting declined when {product} tries to renew my {plan} subscription, even "
                "though the card works everywhere else.",
                "The {product} renewal failed with a 'payment declined' message, but my card is valid until next year.",
            ),
        ),
        Problem(
            "charged after cancelling subscription",
            SW,
            (
                "I cancelled my {product} subscription last month, yet I was charged {amount} again on {date}.",
                "Even though I cancelled {product} weeks ago, another payment of {amount} went out on {date}.",
            ),
        ),
        Problem(
            "need invoice with company details",
            ANY,
            (
                "I need an invoice for my {product} purchase of {amount} that shows our company name and VAT number.",
                "Our accounting team needs a proper invoice with company details for the {product} "
                "payment of {amount}.",
            ),
        ),
        Problem(
            "update payment method on file",
            SW,
            (
                "I want to replace the credit card on my {product} account with a new one, but the billing "
                "page gives an error.",
                "How do I change the payment method for {product}? My old card expired and I cannot find the option.",
            ),
        ),
        Problem(
            "unexpected price increase on renewal",
            SW,
            (
                "My {product} {plan} plan renewed at {amount} instead of the usual price, and I never got "
                "a notice about an increase.",
                "The {product} renewal on {date} cost {amount}, much more than last year, without any warning.",
            ),
        ),
        Problem(
            "charged for plan upgrade never requested",
            SW,
            (
                "I was moved to the {product} {plan} plan and charged {amount}, but I never asked for an upgrade.",
                "Somehow my {product} account was upgraded to {plan} and billed {amount} without my consent.",
            ),
        ),
        Problem(
            "missing receipt for recent payment",
            ANY,
            (
                "I paid {amount} for {product} on {date} but never received a receipt by email.",
                "There is no receipt in my inbox or in my account for the {product} payment of {amount} on {date}.",
            ),
        ),
        Problem(
            "tax charged incorrectly on order",
            HW,
            (
                "My {product} order {order} was charged sales tax twice, the total came to {amount}.",
                "The checkout for my {product} added tax that should not apply, order {order} ended up at {amount}.",
            ),
        ),
    ),
    "shipping": (
        Problem(
            "package not delivered past estimated date",
            HW,
            (
                "My {product} order {order} was supposed to arrive on {date}, but it still has not been delivered.",
                "The estimated delivery date for my {product} (order {order}) was {date} and nothing has arrived.",
            ),
        ),
        Problem(
            "tracking number shows no updates",
            HW,
            (
                "The {carrier} tracking number for my {product} order {order} has not updated in a week.",
                "Tracking for order {order} with my {product} has said 'label created' since {date}.",
            ),
        ),
        Problem(
            "package arrived damaged in transit",
            HW,
            (
                "My {product} arrived today in a crushed box and the device has a cracked corner. Order {order}.",
                "The package with my {product} (order {order}) was badly damaged when {carrier} delivered it.",
            ),
        ),
        Problem(
            "wrong item received in package",
            HW,
            (
                "I ordered a {product} in {color} but the box from order {order} contained a different item.",
                "Order {order} arrived, but instead of my {product} there was something I never ordered.",
            ),
        ),
        Problem(
            "change shipping address before dispatch",
            HW,
            (
                "I need to change the shipping address of my {product} order {order} before it ships.",
                "I moved last week, can you update the delivery address for order {order} ({product})?",
            ),
        ),
        Problem(
            "package marked delivered but missing",
            HW,
            (
                "{carrier} marked my {product} order {order} as delivered on {date}, but there is no package anywhere.",
                "Tracking says my {product} was delivered, but I never received it. Order {order}.",
            ),
        ),
        Problem(
            "accessory missing from package",
            HW,
            (
                "My {product} arrived, but the charging cable was missing from the box. Order {order}.",
                "The {product} from order {order} came without the accessories listed on the product page.",
            ),
        ),
        Problem(
            "request for faster shipping option",
            HW,
            (
                "Is it possible to upgrade the shipping on my {product} order {order} to express delivery?",
                "Can my {product} order {order} be sent with a faster shipping method than {carrier} standard?",
            ),
        ),
    ),
    "refund": (
        Problem(
            "refund for cancelled subscription",
            SW,
            (
                "I cancelled {product} on {date} and would like a refund of the {amount} I paid for the unused period.",
                "Please refund the {amount} for my {product} subscription, I cancelled it right after the renewal.",
            ),
        ),
        Problem(
            "return defective device for refund",
            HW,
            (
                "My {product} stopped working after a few days and I want to return it for a full refund. "
                "Order {order}.",
                "I'd like to send back my faulty {product} (order {order}) and get my {amount} back.",
            ),
        ),
        Problem(
            "refund not received after return",
            HW,
            (
                "I returned my {product} on {date} but I still have not received the refund of {amount}.",
                "{carrier} shows my returned {product} arrived at your warehouse weeks ago, yet no refund "
                "for order {order}.",
            ),
        ),
        Problem(
            "refund for accidental purchase",
            ANY,
            (
                "I bought {product} by accident on {date} and would like my {amount} refunded.",
                "My kid purchased {product} without asking, could I get a refund of the {amount}?",
            ),
        ),
        Problem(
            "partial refund for service outage",
            ("Streamly", "CloudSync", "TaskHive"),
            (
                "{product} was down for most of the week around {date}, so I would like a partial refund "
                "for that time.",
                "Given the long {product} outage on {date}, I am asking for part of my {amount} back.",
            ),
        ),
        Problem(
            "refund to different payment method",
            ANY,
            (
                "My refund for {product} was approved, but the original card is closed. Can you send the "
                "{amount} to a new card?",
                "Can the {amount} refund for {product} go to a different payment method? My old card was cancelled.",
            ),
        ),
        Problem(
            "refund request within trial period",
            SW,
            (
                "I was charged {amount} for {product} even though I cancelled during the free trial, please refund it.",
                "I want my money back for {product}: I cancelled within the trial but still paid {amount}.",
            ),
        ),
        Problem(
            "return unopened item for refund",
            HW,
            (
                "I want to return my unopened {product} from order {order} and get a refund.",
                "The {product} I ordered ({order}) is still sealed. How do I return it for my money back?",
            ),
        ),
    ),
}
