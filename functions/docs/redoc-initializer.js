// Starts ReDoc on the page served at /redoc. A file of its own, because the page's
// Content-Security-Policy allows scripts from 'self' only (no inline script).
//
// ReDoc's styles are <style> elements that styled-components inserts at run time; the
// policy admits them only with the per-response nonce, which the page puts on this
// script element (the `nonce` property; browsers hide the attribute itself). ReDoc hands
// its `nonce` option to the bundle's style injection (webpack's __webpack_nonce__); the
// styles inserted while the bundle loads take the bundle's own script element's nonce
// (functions/docs/Makefile).
(function () {
  var nonce = document.currentScript.nonce;
  window.addEventListener("load", function () {
    var root = document.getElementById("redoc");
    Redoc.init(
      root.dataset.openapiUrl,
      {
        nonce: nonce,
        // The search index runs in a Worker built from a blob: URL, which the policy
        // (worker-src falls back to script-src 'self') forbids: no search box.
        disableSearch: true,
      },
      root
    );
  });
})();
