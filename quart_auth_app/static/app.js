// Progressive enhancement only: every form works without this file.
document.addEventListener("submit", (event) => {
  const button = event.target.querySelector("button[type=submit]");
  if (button) {
    // Disable after the browser has collected the form data, so the click still submits.
    setTimeout(() => { button.disabled = true; button.setAttribute("aria-busy", "true"); }, 0);
  }
});
