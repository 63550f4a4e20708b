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
  const BOXES = '.bd-article div.math, .bd-article span.math, .bd-article pre, .bd-article .pst-scrollable-table-container, .bd-article .table-wrapper, .bd-article figure, .bd-article .cell_output, .bd-article div.animation';
  // every figure's pixel width as --nw: on a phone site.css keeps a figure at >= 0.8 of it (legible text)
  function markFigure(img) {
    const w = img.naturalWidth ? String(img.naturalWidth) : '';
    if (w && img.style.getPropertyValue('--nw') !== w) { img.style.setProperty('--nw', w); markScrolling(); }
  }
  function markFigures() {
    document.querySelectorAll('.bd-article img').forEach(function (img) {
      markFigure(img);
      // and at every later load: an image may get its picture after this runs (an animation sets its frames)
      img.addEventListener('load', function () { markFigure(img); });
    });
  }
  // a box that scrolls can be reached and scrolled with the keyboard (focusable, named for screen readers)
  function markScrolling() {
    document.querySelectorAll(BOXES).forEach(function (el) {
      const scrolls = el.scrollWidth > el.clientWidth + 1;
      el.classList.toggle('site-scrolls', scrolls);
      if (scrolls && !el.hasAttribute('tabindex')) {
        el.setAttribute('tabindex', '0');
        el.dataset.siteTabindex = '1';
      } else if (!scrolls && el.dataset.siteTabindex) {
        el.removeAttribute('tabindex');
        delete el.dataset.siteTabindex;
      }
    });
  }
  // Accessible names (WCAG 2.5.3): a control whose aria-label leaves out the text it shows ("Search" on a button
  // reading "Search... Ctrl+K", "Toggle hidden content" on "Show code cell source") is named by that text too;
  // the animation's frame slider gets a name.
  function nameControls() {
    document.querySelectorAll('button[aria-label], a[aria-label], summary[aria-label]').forEach(function (el) {
      const shown = (el.innerText || '').replace(/\s+/g, ' ').trim();
      const label = el.getAttribute('aria-label');
      if (shown && label.toLowerCase().indexOf(shown.toLowerCase()) < 0) el.setAttribute('aria-label', shown);
    });
    // the left sidebar (book title, search, contents) is a landmark, so all its content is in one
    const side = document.querySelector('.bd-sidebar-primary');
    if (side && !side.hasAttribute('role')) {
      side.setAttribute('role', 'complementary');
      side.setAttribute('aria-label', 'Book contents and search');
    }
    // the colour-mode button is named "Color mode"; its icons (drawn by Font Awesome) are decoration
    document.querySelectorAll('.theme-switch-button svg, .theme-switch-button i').forEach(function (el) {
      el.setAttribute('aria-hidden', 'true');
      el.removeAttribute('role');
      el.removeAttribute('aria-labelledby');
      el.removeAttribute('title');
      el.querySelectorAll('title').forEach(function (t) { t.remove(); });
    });
    // docutils writes the bibliography as role="list" with links among its entries: a list it is not
    document.querySelectorAll('.citation-list[role="list"]').forEach(function (el) {
      if (Array.from(el.children).some(function (c) { return c.getAttribute('role') !== 'listitem'; })) el.removeAttribute('role');
    });
    document.querySelectorAll('[role="doc-biblioentry"]').forEach(function (el) { el.removeAttribute('role'); });
    document.querySelectorAll('.animation input[type="range"]:not([aria-label])').forEach(function (el) {
      el.setAttribute('aria-label', 'Animation frame');
    });
  }
  let pending = null;
  window.addEventListener('resize', function () { clearTimeout(pending); pending = setTimeout(markScrolling, 100); });
  window.addEventListener('load', markScrolling);
  document.addEventListener('toggle', markScrolling, true);  // a folded code cell opened
  function init() {
    markFigures();
    markScrolling();
    nameControls();
    // Font Awesome replaces the icons with SVGs after this runs: name the controls again when it has
    const bar = document.querySelector('.theme-switch-button');
    if (bar && window.MutationObserver) new MutationObserver(nameControls).observe(bar, {childList: true, subtree: true});
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
