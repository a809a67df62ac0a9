// Passkeys (SPEC §12), the one feature that needs JavaScript: adding one on /account and
// signing in with one on /login, through the JSON API. Without this file (or without WebAuthn
// in the browser) their buttons stay hidden and everything else works as before.
"use strict";

(() => {
  const PKC = window.PublicKeyCredential;
  if (!PKC || !PKC.parseCreationOptionsFromJSON || !PKC.parseRequestOptionsFromJSON) {
    return;
  }

  // POST to the API; the answer's status and JSON body (null for none).
  async function post(path, body) {
    const init = { method: "POST", credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let payload = null;
    if (response.status !== 204) {
      payload = await response.json().catch(() => null);
    }
    return { ok: response.ok, payload };
  }

  function say(status, message) {
    if (status) {
      status.textContent = message;
    }
  }

  function refused(result, status) {
    const payload = result.payload || {};
    if (payload.error === "reauthentication_required") {
      const next = encodeURIComponent(window.location.pathname + "#passkeys");
      window.location.assign(`/reauthenticate?next=${next}`);
      return;
    }
    say(status, payload.message || "Something went wrong. Please try again.");
  }

  // /account: the form that adds a passkey.
  function enableAdding(box) {
    const form = box.querySelector("form");
    const status = document.querySelector("[data-passkey-status]");
    const button = form.querySelector("button");
    box.hidden = false;
    for (const note of document.querySelectorAll("[data-passkey-unavailable]")) {
      note.hidden = true;
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      say(status, "Follow your browser's prompts to make the passkey…");
      try {
        const options = await post("/api/passkeys/register/options");
        if (!options.ok) {
          refused(options, status);
          return;
        }
        let credential;
        try {
          const publicKey = PKC.parseCreationOptionsFromJSON(options.payload);
          credential = await navigator.credentials.create({ publicKey });
        } catch (error) {
          say(
            status,
            error.name === "InvalidStateError"
              ? "This device already keeps a passkey for your account."
              : "No passkey was made.",
          );
          return;
        }
        const name = form.elements.passkey_name.value;
        const added = await post("/api/passkeys", { credential: credential.toJSON(), name });
        if (!added.ok) {
          refused(added, status);
          return;
        }
        window.location.reload();
      } catch {
        say(status, "The server could not be reached. Please try again.");
      } finally {
        button.disabled = false;
      }
    });
  }

  // /login (and the landing page): "Sign in with a passkey", and passkeys offered in the
  // email field's autofill (conditional mediation) where the browser can.
  function enableSignIn(box) {
    const form = box.closest("form");
    const button = box.querySelector("button");
    const status = box.querySelector("[data-passkey-status]");
    let pending = null; // the autofill request, aborted when the button is used

    function destination() {
      const next = form.elements.next ? form.elements.next.value : "/";
      return next.startsWith("/") && !next.startsWith("//") ? next : "/";
    }

    async function signIn(mediation, signal) {
      const options = await post("/api/passkeys/login/options");
      if (!options.ok) {
        refused(options, status);
        return;
      }
      const publicKey = PKC.parseRequestOptionsFromJSON(options.payload);
      const credential = await navigator.credentials.get({ publicKey, mediation, signal });
      const remember = Boolean(form.elements.remember && form.elements.remember.checked);
      const result = await post("/api/passkeys/login", {
        credential: credential.toJSON(),
        remember,
      });
      if (!result.ok) {
        refused(result, status);
        return;
      }
      window.location.assign(destination());
    }

    async function offerInAutofill() {
      const available = PKC.isConditionalMediationAvailable
        ? await PKC.isConditionalMediationAvailable().catch(() => false)
        : false;
      if (!available) {
        return;
      }
      const controller = new AbortController();
      const request = signIn("conditional", controller.signal).catch(() => {});
      pending = { controller, request };
    }

    box.hidden = false;
    button.addEventListener("click", async () => {
      button.disabled = true;
      say(status, "");
      if (pending) {
        pending.controller.abort();
        await pending.request;
        pending = null;
      }
      try {
        await signIn("optional");
      } catch (error) {
        say(
          status,
          error && error.name === "NotAllowedError"
            ? "No passkey was used."
            : "Signing in with a passkey did not work. Please try again.",
        );
      } finally {
        button.disabled = false;
      }
    });
    offerInAutofill();
  }

  for (const box of document.querySelectorAll("[data-passkey-add]")) {
    enableAdding(box);
  }
  for (const box of document.querySelectorAll("[data-passkey-signin]")) {
    enableSignIn(box);
  }
})();
