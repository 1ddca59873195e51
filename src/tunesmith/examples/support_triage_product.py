"""The support-triage problem templates about the products themselves: technical, account and feedback. Pure
data; ``support_triage_problems.py`` puts every category together."""

from __future__ import annotations

from tunesmith.examples.support_triage_vocab import ANY, SW, Problem

PRODUCT_PROBLEMS: dict[str, tuple[Problem, ...]] = {
    "technical": (
        Problem(
            "app crashes on startup",
            SW,
            (
                "{product} crashes right after I open it on my {device}, before the main screen even loads.",
                "Since the update to version {version}, {product} closes itself on startup on my {device}.",
            ),
        ),
        Problem(
            "files not syncing between devices",
            ("CloudSync", "TaskHive", "Vaultly"),
            (
                "{product} stopped syncing between my {device} and my other computer, changes from {date} "
                "never showed up.",
                "My data is not syncing in {product}: what I change on my {device} does not appear on my "
                "other devices.",
            ),
        ),
        Problem(
            "video playback keeps buffering",
            ("Streamly",),
            (
                "Every show on {product} keeps buffering every few seconds on my {device}, even though my "
                "internet is fast.",
                "Playback in {product} freezes and buffers constantly on my {device}, which makes it unwatchable.",
            ),
        ),
        Problem(
            "earbuds will not pair with phone",
            ("EchoBuds",),
            (
                "My {product} will not pair with my {device}, the light just blinks and nothing shows up in Bluetooth.",
                "I cannot get my {product} to connect to my {device}, pairing fails every single time.",
            ),
        ),
        Problem(
            "tablet battery drains very fast",
            ("PixelPad",),
            (
                "My {product} battery goes from full to empty in about two hours, even when I barely use it.",
                "Since updating to version {version}, the battery of my {product} drains extremely fast.",
            ),
        ),
        Problem(
            "error message when saving changes",
            SW,
            (
                "Whenever I try to save changes in {product} I get the error 'Something went wrong (code {code})'.",
                "{product} shows error {code} every time I save something on my {device}.",
            ),
        ),
        Problem(
            "tablet touchscreen stops responding to taps",
            ("PixelPad",),
            (
                "The touchscreen on my {product} randomly stops responding and I have to restart it.",
                "My {product} screen freezes and ignores taps several times a day since version {version}.",
            ),
        ),
        Problem(
            "audio cuts out in one ear",
            ("EchoBuds",),
            (
                "The left earbud of my {product} keeps cutting out while the right one plays fine.",
                "Sound in one of my {product} drops every few minutes when connected to my {device}.",
            ),
        ),
        Problem(
            "app very slow after latest update",
            SW,
            (
                "After the version {version} update, {product} takes ages to load anything on my {device}.",
                "{product} has become extremely slow since the last update, every click takes seconds.",
            ),
        ),
        Problem(
            "notifications not arriving on device",
            SW,
            (
                "I no longer receive any notifications from {product} on my {device}, although they are turned on.",
                "Push notifications from {product} stopped working on my {device} around {date}.",
            ),
        ),
    ),
    "account": (
        Problem(
            "cannot log in to account",
            SW,
            (
                "I cannot log in to my {product} account, it says my password is wrong even though I am "
                "sure it is right.",
                "Every time I try to sign in to {product} with {email} I get 'invalid credentials'.",
            ),
        ),
        Problem(
            "password reset email never arrives",
            SW,
            (
                "I requested a password reset for {product} several times but the email never arrives at {email}.",
                "The {product} 'forgot password' link does not send anything to {email}, not even to spam.",
            ),
        ),
        Problem(
            "lost access to two-factor device",
            SW,
            (
                "I lost the phone I used for two-factor authentication and now I am locked out of {product}.",
                "My old phone with the {product} two-factor codes broke, so I cannot get past the verification step.",
            ),
        ),
        Problem(
            "change email address on account",
            ANY,
            (
                "I would like to change the email address on my {product} account from {email} to my new work address.",
                "How can I update the login email of my {product} account? {email} is no longer in use.",
            ),
        ),
        Problem(
            "account locked after failed attempts",
            SW,
            (
                "My {product} account got locked after a few failed login attempts and it is still locked a day later.",
                "{product} says my account is temporarily locked, but it has been like that since {date}.",
            ),
        ),
        Problem(
            "request to delete account and data",
            ANY,
            (
                "Please delete my {product} account ({email}) and all the personal data you hold about me.",
                "I want to close my {product} account permanently and have my data erased.",
            ),
        ),
        Problem(
            "suspicious login from unknown location",
            SW,
            (
                "I got an alert about a {product} login from a country I have never been to, on {date}.",
                "Someone seems to have signed in to my {product} account from an unknown device yesterday.",
            ),
        ),
        Problem(
            "add team member to shared account",
            ("TaskHive", "CloudSync", "Vaultly"),
            (
                "I am trying to add a colleague to our {product} {plan} workspace but the invite button is greyed out.",
                "How do I give a new team member access to our shared {product} account?",
            ),
        ),
        Problem(
            "username shows wrong name on profile",
            ANY,
            (
                "My {product} profile shows someone else's name instead of mine, and I cannot edit it.",
                "The name on my {product} account is wrong and the profile settings page will not let me change it.",
            ),
        ),
    ),
    "feedback": (
        Problem(
            "suggestion to add dark mode",
            SW,
            (
                "I would like to suggest adding a dark mode to {product}, it would be much easier on the "
                "eyes at night.",
                "Have you considered a dark theme for {product}? I use it a lot in the evening.",
            ),
        ),
        Problem(
            "feedback on redesigned user interface",
            ANY,
            (
                "I wanted to share my thoughts on the redesigned {product} interface that came with version {version}.",
                "Some feedback on the new {product} layout: the menus moved around quite a bit in the last update.",
            ),
        ),
        Problem(
            "request for offline mode",
            ("Streamly", "CloudSync", "TaskHive"),
            (
                "It would be great if {product} had an offline mode for when I travel without internet.",
                "Please consider letting {product} work offline, I often use it on trains.",
            ),
        ),
        Problem(
            "feature request for export to csv",
            ("TaskHive", "Vaultly", "CloudSync"),
            (
                "A feature request: could {product} let me export my data to a CSV file?",
                "I would love an 'export to CSV' button in {product} for my reports.",
            ),
        ),
        Problem(
            "feedback on sound quality",
            ("EchoBuds",),
            (
                "I wanted to give you some feedback on the sound quality of my {product}, especially the bass.",
                "A few thoughts about how my {product} sound compared to my previous earbuds.",
            ),
        ),
        Problem(
            "comment on recent price change",
            SW,
            (
                "I have some feedback about the recent price change for the {product} {plan} plan.",
                "Just sharing my opinion on the new {product} pricing that was announced on {date}.",
            ),
        ),
        Problem(
            "feedback on support agent interaction",
            ANY,
            (
                "I wanted to let you know that your agent {agent} helped me with {product} last week.",
                "A quick note about {agent} from your team, who handled my {product} question on {date}.",
            ),
        ),
        Problem(
            "suggestion for larger screen model",
            ("PixelPad",),
            (
                "Any plans for a bigger {product}? A larger screen model would be perfect for drawing.",
                "I'd like to suggest a {product} with a larger screen for people who use it for work.",
            ),
        ),
        Problem(
            "request for more language options",
            SW,
            (
                "Could {product} support more languages? My parents would love to use it in {language}.",
                "It would be nice if the {product} app were available in {language}.",
            ),
        ),
    ),
}
