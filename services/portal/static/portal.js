// kagi portal: the one script, a file the CSP allows from the portal itself (no inline
// script anywhere). Every page works without it; it only does what a page cannot do alone.
(function () {
  "use strict";

  // A page showing a setup key is never shown again from the back/forward cache: it is
  // asked for anew, and after a logout (or once step 4 was shown) the portal refuses it.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted && document.body.hasAttribute("data-secret")) {
      window.location.reload();
    }
  });

  // "メールを再送信する" wakes up when the 3 minutes are over, without a reload. The server
  // says how long to wait (its own clock, not the phone's); the no-script text stays true.
  var resend = document.getElementById("resend");
  if (resend && resend.disabled && resend.hasAttribute("data-wait-ms")) {
    var wait = Math.max(0, Number(resend.getAttribute("data-wait-ms")) || 0);
    window.setTimeout(function () {
      resend.disabled = false;
      var note = document.getElementById("resend-wait");
      if (note) {
        note.hidden = true;
      }
    }, wait);
  }
})();
