/* "Diffusion, Derived": the menu buttons, scroll cues, phone figures (html_js_files in _config.yml;
   checked by tests/test_site.py).
   pydata-sphinx-theme and sphinx-book-theme bind their click handlers (open the phone drawer / collapse the
   desktop sidebar; open "On this page") to the FIRST .primary-toggle and .secondary-toggle of the page, a
   button of the theme's top bar that sphinx-book-theme hides. The visible buttons are later duplicates: we
   forward their clicks to the first one, so both themes' handlers run as intended. */
(function () {
  function forward(selector) {
    const first = document.querySelector(selector);
    if (!first) return;
    document.querySelectorAll(selector).forEach(function (btn) {
      if (btn === first) return;
      btn.addEventListener('click', function (e) {
        e.preventDefault();
        e.stopPropagation();
        first.click();
      });
    });
  }
  // A box that scrolls sideways (a long equation, a wide table, a long code line) gets class site-scrolls,
  // which draws the fading edge that tells the reader there is more (site.css).
  const BOXES = '.bd-article div.math, .bd-article span.math, .bd-article pre, .bd-article .pst-scrollable-table-container, .bd-article .table-wrapper, .bd-article figure, .bd-article .cell_output';
  // every figure's pixel width as --nw: on a phone site.css keeps a figure at >= 0.8 of it (legible text)
  function markFigure(img) {
    if (img.naturalWidth) { img.style.setProperty('--nw', String(img.naturalWidth)); markScrolling(); }
  }
  function markFigures() {
    document.querySelectorAll('.bd-article img').forEach(function (img) {
      if (img.complete) markFigure(img); else img.addEventListener('load', function () { markFigure(img); });
    });
  }
  function markScrolling() {
    document.querySelectorAll(BOXES).forEach(function (el) {
      el.classList.toggle('site-scrolls', el.scrollWidth > el.clientWidth + 1);
    });
  }
  let pending = null;
  window.addEventListener('resize', function () { clearTimeout(pending); pending = setTimeout(markScrolling, 100); });
  window.addEventListener('load', markScrolling);
  document.addEventListener('toggle', markScrolling, true);  // a folded code cell opened
  function init() {
    markFigures();
    markScrolling();
    forward('.primary-toggle');
    forward('.secondary-toggle');
    document.querySelectorAll('dialog#pst-primary-sidebar-modal, dialog#pst-secondary-sidebar-modal').forEach(function (d) {
      // a click on the drawer's backdrop (the dialog itself, outside its content) or on one of its links closes it
      d.addEventListener('click', function (e) {
        if (e.target === d || (e.target.closest && e.target.closest('a[href]'))) d.close();
      });
    });
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
