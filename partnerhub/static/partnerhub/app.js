/* PartnerHub's only script besides htmx. The Content-Security-Policy allows no inline
   handlers, so behaviour is declared with data attributes:
   - <form data-confirm="Question?">   asks before submitting;
   - <select data-autosubmit>          submits its form when changed. */
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field && field.matches && field.matches("[data-autosubmit]") && field.form) {
      if (field.form.requestSubmit) { field.form.requestSubmit(); } else { field.form.submit(); }
    }
  });
})();
