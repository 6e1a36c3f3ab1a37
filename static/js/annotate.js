// Keyboard judging: 1/2 left/right better, Shift+1/Shift+2 clearly better, 3 tie, 4 both bad, s skip,
// u undo (opens the judgment just recorded, to change it), e improve an answer (opens the edit box).
// Thumbs: 1 good, 2 bad. Rankings: the answers' numbers best first ("=" ties, Backspace takes back).
// Keys typed into a text box stay there (Esc leaves the box); after a swap the comparison takes focus.
(function () {
  "use strict";

  function keyName(event) {
    if (event.code && event.code.indexOf("Digit") === 0) {
      return (event.shiftKey ? "shift+" : "") + event.code.slice(5);
    }
    if (!event.shiftKey && (event.key === "s" || event.key === "S")) return "s";
    if (!event.shiftKey && (event.key === "u" || event.key === "U")) return "u";
    if (!event.shiftKey && (event.key === "e" || event.key === "E")) return "e";
    return null;
  }

  // While a judgment is on its way and until the next comparison has settled (htmx has wired its
  // form), keys are ignored: a key pressed in that window would post the form without htmx (a full
  // page load) or judge twice.
  // (At most 10 s: a lost response must not leave the keys dead.)
  var busySince = 0;
  function busy() { return busySince && Date.now() - busySince < 10000; }
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.target.closest && event.target.closest("#judge, #undo")) busySince = Date.now();
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.xhr && event.detail.xhr.status === 204) busySince = 0;  // nothing to swap
  });
  document.addEventListener("htmx:afterSettle", function () { busySince = 0; });
  document.addEventListener("htmx:sendError", function () { busySince = 0; });

  // A form htmx has not wired yet (swapped in a moment ago: the arena's answers ending as a vote key
  // is pressed) must never post itself as a plain page load, which would leave the bare fragment as
  // the page. htmx cancels the submit of every form it wired, on the form itself, before this runs:
  // whatever reaches here unprevented is not wired yet, so it waits until htmx has wired it, once.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || !form.matches || !form.matches("form[hx-post]") || !window.htmx) return;
    event.preventDefault();
    if (form.dataset.rewired) return;
    form.dataset.rewired = "1";
    var submitter = event.submitter;
    window.htmx.process(form);
    setTimeout(function () {
      if (submitter && submitter.isConnected) submitter.click();
      else if (form.isConnected) form.requestSubmit();
    }, 0);
  });

  // The arena's message box keeps what was typed until it is sent: a send refused (answers still being
  // written, perhaps in another tab) and the swap that ends a stream put it back in the box (this tab's
  // sessionStorage; removed once a send succeeds).
  var DRAFT = "prefloop-arena-draft";
  function askOf(event) { return event.target.closest && event.target.closest(".arena-ask"); }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var ask = askOf(event);
    var box = ask && ask.querySelector('textarea[name="text"]');
    if (box && box.value) sessionStorage.setItem(DRAFT, box.value);
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (askOf(event) && event.detail.successful) sessionStorage.removeItem(DRAFT);
  });
  function draftRestore() {
    var box = document.querySelector('#arena .arena-ask textarea[name="text"]');
    var kept = sessionStorage.getItem(DRAFT);
    if (box && kept && !box.value) box.value = kept;
  }
  document.addEventListener("htmx:afterSettle", draftRestore);
  document.addEventListener("htmx:sseMessage", function () { setTimeout(draftRestore, 50); });
  document.addEventListener("DOMContentLoaded", draftRestore);

  // A vote key pressed twice: the second lands in the next message box the vote brings (it takes the
  // focus), so a digit 1-4 typed into the arena box within a second of a vote is dropped.
  var votedAt = 0;
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.target.closest && event.target.closest("#arena #judge")) votedAt = Date.now();
  });
  document.addEventListener("htmx:afterSettle", function () {
    if (votedAt && Date.now() - votedAt < 10000) votedAt = Date.now();
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target.closest && target.closest("textarea, input, select, [contenteditable]")) {
      if (
        target.closest(".arena-ask") && Date.now() - votedAt < 1000 &&
        /^Digit[1-4]$/.test(event.code || "")
      ) {
        event.preventDefault();
        return;
      }
      if (event.key === "Escape") target.blur();
      // Ctrl+Enter (Cmd+Enter) sends the arena's message box.
      var ask = target.closest(".arena-ask");
      if (ask && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        ask.requestSubmit();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (busy()) {
      event.preventDefault();
      return;
    }
    var rankForm = document.querySelector("#judge.rank-form");
    if (rankForm && rankKey(rankForm, event)) {
      event.preventDefault();
      return;
    }
    var key = keyName(event);
    if (!key) return;
    if (key === "e") {
      var box = document.getElementById("edit");
      if (!box) return;
      event.preventDefault();
      box.open = true;
      box.querySelector('textarea[name="edit"]').focus();
      return;
    }
    if (key === "u") {
      var undo = document.getElementById("undo");
      if (!undo) return;
      event.preventDefault();
      undo.click();
      return;
    }
    var choice = document.querySelector('#change-form input[data-key="' + key + '"]');
    if (choice) {  // the review page: the same keys change the judgment and save it
      event.preventDefault();
      choice.checked = true;
      choice.form.requestSubmit();
      return;
    }
    var button = document.querySelector('#judge button[data-key="' + key + '"]');
    var waiting = document.getElementById("arena-wait");
    if (!button && waiting && /^(shift\+)?[1-4]$/.test(key)) {  // the arena's answers still coming: say so
      event.preventDefault();
      waiting.hidden = false;
      return;
    }
    if (!button || button.disabled) return;
    event.preventDefault();
    button.click();
  });

  // Ranking by keyboard: the answers' numbers best first; "=" ties the next with the one before;
  // Backspace takes the last back. The last answer places itself and the ranking is sent. The ranks
  // land in the form's selects (competition ranking: 1, 2, 2, 4), which also work without a keyboard.
  var placed = [];
  var tieNext = false;
  document.addEventListener("htmx:afterSwap", function () { placed = []; tieNext = false; });

  function rankShow(form) {
    var selects = form.querySelectorAll("select[data-answer]");
    var ranks = {};
    placed.forEach(function (item, index) {
      ranks[item.answer] = item.tie && index > 0 ? ranks[placed[index - 1].answer] : index + 1;
    });
    selects.forEach(function (select) {
      select.value = ranks[select.getAttribute("data-answer")] ? String(ranks[select.getAttribute("data-answer")]) : "";
    });
    var text = placed.map(function (item, index) {
      return (index === 0 ? "" : item.tie ? " = " : " > ") + item.answer;
    }).join("");
    form.querySelector("#rank-order").textContent = text ? "Your ranking: " + text + (tieNext ? " =" : "") : "";
  }

  function rankKey(form, event) {
    var total = form.querySelectorAll("select[data-answer]").length;
    if (event.key === "Backspace") {
      if (!placed.length && !tieNext) return false;
      if (tieNext) tieNext = false; else placed.pop();
      rankShow(form);
      return true;
    }
    if (event.key === "=") {
      if (placed.length) tieNext = true;
      rankShow(form);
      return true;
    }
    if (!event.code || event.code.indexOf("Digit") !== 0 || event.shiftKey) return false;
    var answer = event.code.slice(5);
    var number = parseInt(answer, 10);
    if (!(number >= 1 && number <= total)) return false;
    if (placed.some(function (item) { return item.answer === answer; })) return true;
    placed.push({ answer: answer, tie: tieNext });
    tieNext = false;
    if (placed.length === total - 1) {
      for (var n = 1; n <= total; n++) {
        if (!placed.some(function (item) { return item.answer === String(n); })) {
          placed.push({ answer: String(n), tie: false });
        }
      }
    }
    rankShow(form);
    if (placed.length === total) form.querySelector("#rank-submit").click();
    return true;
  }

  // "Start from the left/right answer": its text into the edit box, and the box says which it rewrites.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("#edit button[data-copy]");
    if (!button) return;
    var box = document.getElementById("edit");
    var side = button.getAttribute("data-copy");
    var edit = box.querySelector('textarea[name="edit"]');
    edit.value = box.querySelector('textarea.original[data-side="' + side + '"]').value;
    box.querySelector('select[name="edit_of"]').value = side;
    edit.focus();
  });

  // The campaign picker submits when changed (no inline handlers: the CSP allows none).
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (select.matches && select.matches("select[data-submit-on-change]")) select.form.requestSubmit();
  });

  // After a swap the next comparison starts where the last one did: scrolled to its own top only when
  // that is above the screen (the page header and the campaign picker stay out of the way).
  document.addEventListener("htmx:afterSwap", function () {
    var comparison = document.getElementById("comparison");
    if (!comparison) return;
    comparison.focus({ preventScroll: true });
    if (comparison.getBoundingClientRect().top < 0) comparison.scrollIntoView({ block: "start" });
  });
})();
