// Progressive enhancement only: every form works without this file.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (event.defaultPrevented || !(form instanceof HTMLFormElement)) {
    return;
  }
  const button = event.submitter || form.querySelector("button[type=submit]");
  if (!button || form.dataset.submitting) {
    return;
  }
  form.dataset.submitting = "1";
  // Disable once the browser has collected the form data, so the click still submits.
  setTimeout(() => {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
  }, 0);
});

// Coming back through the history (back/forward cache) must not leave buttons disabled.
window.addEventListener("pageshow", () => {
  for (const form of document.querySelectorAll("form[data-submitting]")) {
    delete form.dataset.submitting;
    for (const button of form.querySelectorAll("button[aria-busy]")) {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }
});
