// Tollgate's pages: small enhancements over server-rendered HTML (every action also works
// without JavaScript). Loaded with `defer`; no inline script anywhere (strict CSP).
(function () {
  "use strict";

  // <div class="bar"><span class="bar-fill" data-width="42"></span></div>: width in percent.
  function sizeBars(root) {
    root.querySelectorAll(".bar-fill[data-width]").forEach(function (el) {
      var width = Math.max(0, Math.min(100, parseFloat(el.dataset.width) || 0));
      el.style.width = width + "%";
    });
  }

  // <button data-copy="#id">: copies the text of the element #id (or its value).
  function wireCopy(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      if (button.dataset.copyWired) return;
      button.dataset.copyWired = "1";
      button.hidden = false;
      button.addEventListener("click", function () {
        var source = document.querySelector(button.dataset.copy);
        if (!source || !navigator.clipboard) return;
        var text = "value" in source && source.value !== undefined ? source.value : source.textContent;
        navigator.clipboard.writeText(text.trim()).then(function () {
          var label = button.textContent;
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = label; }, 1500);
        });
      });
    });
  }

  // <canvas data-chart="line|bar" data-chart-data="json-script-id">: a Chart.js chart of
  // {"labels": [...], "datasets": [{"label": "...", "data": ["1.23", ...]}]} (dollars as
  // decimal strings, drawn as numbers; the figures themselves are in the page's tables).
  function drawCharts(root) {
    if (!window.Chart) return;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.dataset.chartDrawn) return;
      var source = document.getElementById(canvas.dataset.chartData);
      if (!source) return;
      var spec = JSON.parse(source.textContent);
      canvas.dataset.chartDrawn = "1";
      new window.Chart(canvas, {
        type: canvas.dataset.chart,
        data: {
          labels: spec.labels,
          datasets: spec.datasets.map(function (set) {
            return Object.assign({}, set, { data: set.data.map(Number) });
          }),
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          interaction: { mode: "index", intersect: false },
          scales: { y: { beginAtZero: true } },
        },
      });
    });
  }

  // ---- keys ----
  // The create-key form: <div data-funding-choice> holds the funding radios; each
  // <fieldset data-funding="prepaid|wallet"> shows only for its funding. Without
  // JavaScript both stay visible and the server reads the chosen one's inputs.
  function wireFunding(root) {
    root.querySelectorAll("[data-funding-choice]").forEach(function (choice) {
      if (choice.dataset.fundingWired) return;
      choice.dataset.fundingWired = "1";
      var form = choice.closest("form");
      if (!form) return;
      function show() {
        var checked = choice.querySelector("input[type=radio]:checked");
        var funding = checked ? checked.value : "prepaid";
        form.querySelectorAll("fieldset[data-funding]").forEach(function (set) {
          set.hidden = set.dataset.funding !== funding;
        });
      }
      choice.addEventListener("change", show);
      show();
    });
  }

  // The header's navigation scrolls sideways on a phone: show the current page's link.
  function revealCurrentNav() {
    document.querySelectorAll(".site-header .main-nav").forEach(function (list) {
      var current = list.querySelector("[aria-current=page]");
      if (!current || list.scrollWidth <= list.clientWidth) return;
      var box = list.getBoundingClientRect();
      var link = current.getBoundingClientRect();
      if (link.left >= box.left && link.right <= box.right) return;
      list.scrollLeft += link.left - box.left - (box.width - link.width) / 2;
    });
  }

  function enhance(root) {
    sizeBars(root);
    wireCopy(root);
    drawCharts(root);
    wireFunding(root);
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); revealCurrentNav(); });
  // Again when the page gets narrower or wider (a phone turned), not when only its height
  // changes (a phone's address bar showing or hiding while the reader scrolls).
  var navWidth = window.innerWidth;
  window.addEventListener("resize", function () {
    if (window.innerWidth === navWidth) return;
    navWidth = window.innerWidth;
    revealCurrentNav();
  });
  document.addEventListener("htmx:load", function (event) { enhance(event.target); });
})();

// <button data-print hidden>: shown only with JavaScript, prints the page (its print
// stylesheet leaves out the navigation and the controls).
(function () {
  "use strict";

  function wirePrint(root) {
    root.querySelectorAll("button[data-print]").forEach(function (button) {
      if (button.dataset.printWired) return;
      button.dataset.printWired = "1";
      button.hidden = false;
      button.addEventListener("click", function () { window.print(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { wirePrint(document); });
  document.addEventListener("htmx:load", function (event) { wirePrint(event.target); });
})();
