"""The HTML pages of the human perception study (consent, instructions, one item, done, errors).

Papernot et al., "The Limitations of Deep Learning in Adversarial Settings" (EuroS&P 2016), Section V-C: each image
is shown with the paper's two questions. The pages are plain HTML forms that work without JavaScript; one small
inline script adds keyboard shortcuts (y / n, 0-9, Enter). The inline style and script are constants, so the
Content-Security-Policy allows exactly them by their SHA-256 hashes (:data:`CSP`). Every value written into a page
goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any

__all__ = ["CSP", "consent_page", "done_page", "error_page", "instructions_page", "item_page"]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }
#item-image { width: 336px; height: 336px; image-rendering: pixelated; image-rendering: crisp-edges;
  border: 1px solid #888; display: block; margin: 1rem auto; }
fieldset { margin: 1rem 0; } .labels label { display: inline-block; min-width: 9rem; margin: .2rem 0; }
#progress { font-weight: bold; } kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .3rem; }
button { font-size: 1.1rem; padding: .4rem 1.2rem; } .error { color: #a00; }
"""

SCRIPT = """
document.addEventListener("keydown", function (e) {
  if (e.ctrlKey || e.metaKey || e.altKey) { return; }
  var k = e.key, el = null;
  if (k === "y" || k === "Y") { el = document.getElementById("is-digit-yes"); }
  else if (k === "n" || k === "N") { el = document.getElementById("is-digit-no"); }
  else if (k.length === 1 && k >= "0" && k <= "9") { el = document.getElementById("label-" + k); }
  else if (k === "Enter") {
    e.preventDefault();
    var f = document.getElementById("answer-form");  /* f.submit is the button #submit: use requestSubmit */
    if (f.requestSubmit) { f.requestSubmit(); }
    else if (f.reportValidity()) { HTMLFormElement.prototype.submit.call(f); }
    return;
  }
  if (el) { el.checked = true; e.preventDefault(); }
});
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; img-src 'self'; style-src {_sha256(STYLE)}; script-src {_sha256(SCRIPT)}; "
       f"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _page(title: str, body: str, script: bool = False) -> str:
    js = f"<script>{SCRIPT}</script>" if script else ""
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            f"content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title><style>{STYLE}</style>"
            f"</head><body>{body}{js}</body></html>")


def consent_page(csrf: str, settings: dict[str, Any]) -> str:
    """What the study is and what is stored; the consent form (``#consent-form``, button ``#consent``)."""
    n = int(settings["items_per_participant"])
    body = f"""<h1>A short study of how people see images</h1>
<p>You will see about {n} small images, one at a time, and answer two questions about each. It takes about
{max(1, round(n * 6 / 60))} minutes. The images include ones altered by a computer program; we compare what people see
with what an image-recognition model sees (the human perception study of Papernot et al., 2016).</p>
<ul><li>Your answers are anonymous: we store a random pseudonymous id, your answers, how long each took and when.
We do not store your name, your IP address or anything about your browser.</li>
<li>You can stop at any time by closing the page; answers given so far are kept. Coming back later in the same
browser continues where you left off.</li>
<li>There are no right or wrong answers: answer what you see.</li></ul>
<form id="consent-form" method="post" action="/consent">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<button id="consent" type="submit">I agree, start</button></form>"""
    return _page("Consent", body)


def instructions_page(settings: dict[str, Any]) -> str:
    """The two questions and the keys; the link ``#start`` to the first item."""
    q = settings["questions"]
    classes = ", ".join(f"{k} {escape(c)}" for k, c in enumerate(settings["classes"]))
    body = f"""<h1>Instructions</h1>
<p>Each page shows one image, enlarged. Answer two questions:</p>
<ol><li><b>{escape(q['is_digit'])}</b> Yes or no (keys <kbd>y</kbd> / <kbd>n</kbd>).</li>
<li><b>{escape(q['label'])}</b> Choose the closest class even if unsure (keys <kbd>0</kbd>-<kbd>9</kbd>):
{classes}.</li></ol>
<p>Then press <kbd>Enter</kbd> or the button to go on. A counter shows how far you are.</p>
<p><a id="start" href="/item">Start</a></p>"""
    return _page("Instructions", body)


def item_page(item: int, answered: int, total: int, csrf: str, settings: dict[str, Any]) -> str:
    """One item: the image, the progress ``K / N``, and the answer form (ids as issue 28's contract names them)."""
    q = settings["questions"]
    labels = "".join(
        f'<label><input type="radio" name="label" value="{k}" id="label-{k}" required> {k} {escape(c)}</label> '
        for k, c in enumerate(settings["classes"]))
    body = f"""<div id="progress">{answered} / {total}</div>
<img id="item-image" src="/image/{int(item)}" alt="the image to judge">
<form id="answer-form" method="post" action="/answer">
<input type="hidden" name="csrf" value="{escape(csrf)}"><input type="hidden" name="item" value="{int(item)}">
<fieldset><legend>{escape(q['is_digit'])} (<kbd>y</kbd>/<kbd>n</kbd>)</legend>
<label><input type="radio" name="is_digit" value="1" id="is-digit-yes" required> Yes</label>
<label><input type="radio" name="is_digit" value="0" id="is-digit-no"> No</label></fieldset>
<fieldset class="labels"><legend>{escape(q['label'])} (<kbd>0</kbd>-<kbd>9</kbd>)</legend>{labels}</fieldset>
<button id="submit" type="submit">Next (Enter)</button></form>"""
    return _page(f"Image {answered + 1} of {total}", body, script=True)


def done_page() -> str:
    """The thank-you page (``#done``)."""
    return _page("Thank you", '<div id="done"><h1>Thank you!</h1><p>All your answers are saved. You can close this '
                              'page.</p></div>')


def error_page(message: str) -> str:
    """A short error page with a way back."""
    return _page("Error", f'<p class="error">{escape(message)}</p><p><a href="/item">Back to the study</a></p>')
