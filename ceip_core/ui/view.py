"""The tk widgets of the feedback dialogs: drawing and clicks only; what to show and do is the model's.

Imported only when a dialog is shown, so that ``import ceip_core`` never loads tkinter.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import font as tkfont
from tkinter import ttk

from ceip_core.records import Category
from ceip_core.ui.model import Collected, FirstRun, OptionsModel

_WRAP = 560
#: How often the options window re-reads the state folder, in milliseconds.
REFRESH_MS = 1000


class OptionsDialog:
    """The "Customer Feedback Options" window, in a toplevel of ``master``.

    Widgets that tests and products may want are attributes: ``take_part[product]`` and
    ``decline[product]`` (the two choices), ``send[product][category]`` (a check box per category of
    information, usable while the product takes part), ``reset_button``, ``close_button``, ``status``.
    """

    def __init__(self, master: tk.Misc, model: OptionsModel) -> None:
        self.model = model
        _ = model._
        self.window = top = tk.Toplevel(master)
        top.title(model.title())
        top.protocol("WM_DELETE_WINDOW", self.close)
        top.bind("<Escape>", lambda _event: self.close())
        frame = ttk.Frame(top, padding=12)
        frame.pack(fill="both", expand=True)
        ttk.Label(frame, text=model.intro(), wraplength=_WRAP, justify="left").pack(anchor="w", pady=(0, 8))

        self.choice: dict[str, tk.StringVar] = {}
        self.take_part: dict[str, ttk.Radiobutton] = {}
        self.decline: dict[str, ttk.Radiobutton] = {}
        self.state_label: dict[str, ttk.Label] = {}
        self.queued_label: dict[str, ttk.Label] = {}
        self.sending: dict[str, dict[Category, tk.BooleanVar]] = {}
        self.send: dict[str, dict[Category, ttk.Checkbutton]] = {}
        self.notebook = ttk.Notebook(frame)
        self.notebook.pack(fill="both", expand=True)
        for view in model.products():
            tab = ttk.Frame(self.notebook, padding=8)
            self.notebook.add(tab, text=view.name)
            var = self.choice[view.id] = tk.StringVar(top, "")
            row = ttk.Frame(tab)
            row.pack(anchor="w")
            for value, label, store in (
                ("in", _("Yes, take part"), self.take_part),
                ("out", _("No, do not take part"), self.decline),
            ):
                button = ttk.Radiobutton(row, text=label, value=value, variable=var, command=self._chooser(view.id))
                button.pack(side="left", padx=(0, 16))
                store[view.id] = button
            ttk.Label(tab, text=model.categories_text(), wraplength=_WRAP, justify="left").pack(anchor="w", pady=(6, 0))
            boxes = ttk.Frame(tab)
            boxes.pack(anchor="w")
            self.sending[view.id], self.send[view.id] = {}, {}
            for category in Category:
                flag = self.sending[view.id][category] = tk.BooleanVar(top, False)
                box = ttk.Checkbutton(
                    boxes, text=model.heading(category), variable=flag, command=self._sender(view.id, category)
                )
                box.pack(side="left", padx=(0, 16))
                self.send[view.id][category] = box
            self.state_label[view.id] = ttk.Label(tab)
            self.state_label[view.id].pack(anchor="w", pady=(4, 0))
            self.queued_label[view.id] = ttk.Label(tab)
            self.queued_label[view.id].pack(anchor="w")
            ttk.Label(tab, text=_("What is collected")).pack(anchor="w", pady=(8, 2))
            self._collected(tab, view.collected)

        ttk.Label(frame, text=model.every_report(), wraplength=_WRAP, justify="left").pack(anchor="w", pady=8)
        sending = ttk.LabelFrame(frame, text=_("Sending"), padding=8)
        sending.pack(fill="x")
        self.sending_label = ttk.Label(sending, justify="left", wraplength=_WRAP)
        self.sending_label.pack(anchor="w")
        identity = ttk.LabelFrame(frame, text=_("This computer"), padding=8)
        identity.pack(fill="x", pady=(8, 0))
        self.guid_label = ttk.Label(identity)
        self.guid_label.pack(anchor="w")
        self.reset_button = ttk.Button(identity, text=_("Reset machine ID"), command=self._reset)
        self.reset_button.pack(anchor="w", pady=(4, 0))
        self.status = ttk.Label(frame, wraplength=_WRAP, justify="left")
        self.status.pack(anchor="w", pady=(8, 0))
        self.close_button = ttk.Button(frame, text=_("Close"), command=self.close)
        self.close_button.pack(anchor="e")
        self.refresh()
        self._poll()

    def _poll(self) -> None:
        """Follow changes made elsewhere (``ceip consent out`` in a shell, an upload) while the window is
        open: one small read of the state database a second."""
        self.refresh()
        self._after = self.window.after(REFRESH_MS, self._poll)

    def _collected(self, parent: ttk.Frame, collected: tuple[Collected, ...]) -> None:
        box = ttk.Frame(parent)
        box.pack(fill="both", expand=True)
        body = tkfont.nametofont("TkDefaultFont", root=parent)
        bold = body.copy()
        bold.configure(weight="bold")
        text = tk.Text(box, height=9, width=72, wrap="word", relief="flat", borderwidth=0, font=body)
        scroll = ttk.Scrollbar(box, orient="vertical", command=text.yview)
        text.configure(yscrollcommand=scroll.set)
        text.tag_configure("heading", font=bold, spacing1=4)
        text.tag_configure("item", lmargin1=8, lmargin2=22)
        for group in collected:
            text.insert("end", f"{group.heading}\n", "heading")
            for item in group.items:
                text.insert("end", f"•  {item}\n", "item")
        text.configure(state="disabled")
        text.pack(side="left", fill="both", expand=True)
        scroll.pack(side="right", fill="y")

    def refresh(self) -> None:
        """Show the state on disk now (another process may have changed it)."""
        for view in self.model.products():
            self.choice[view.id].set({"in": "in", "out": "out"}.get(view.state.value, ""))
            state = "disabled" if view.capped else "normal"
            self.take_part[view.id].configure(state=state)
            self.decline[view.id].configure(state=state)
            for category, box in self.send[view.id].items():
                self.sending[view.id][category].set(category in view.categories)
                box.configure(state="normal" if view.participating else "disabled")
            self.state_label[view.id].configure(text=self.model.state_text(view))
            self.queued_label[view.id].configure(text=self.model.queued_text(view))
        self.sending_label.configure(text=self.model.sending_text())
        self.guid_label.configure(text=self.model.machine_id_text())
        self.reset_button.configure(state="normal" if self.model.machine_id() else "disabled")

    def _chooser(self, product: str) -> Callable[[], None]:
        def choose() -> None:
            self.status.configure(text=self.model.set_participation(product, self.choice[product].get() == "in"))
            self.refresh()

        return choose

    def _sender(self, product: str, category: Category) -> Callable[[], None]:
        def toggle() -> None:
            send = self.sending[product][category].get()
            self.status.configure(text=self.model.set_category(product, category, send))
            self.refresh()

        return toggle

    def _reset(self) -> None:
        self.status.configure(text=self.model.reset_id())
        self.refresh()

    def close(self) -> None:
        self.window.after_cancel(self._after)
        self.window.destroy()


class FirstRunDialog:
    """The one question at a product's first start; the answer is recorded, and it is never asked again."""

    def __init__(self, master: tk.Misc, first_run: FirstRun) -> None:
        self.first_run = first_run
        self.answer: str | None = None
        self.window = top = tk.Toplevel(master)
        top.title(first_run.title())
        top.protocol("WM_DELETE_WINDOW", self.close)
        top.bind("<Escape>", lambda _event: self.close())
        frame = ttk.Frame(top, padding=12)
        frame.pack(fill="both", expand=True)
        ttk.Label(frame, text=first_run.question(), wraplength=_WRAP, justify="left").pack(anchor="w")
        row = ttk.Frame(frame)
        row.pack(anchor="e", pady=(12, 0))
        self.no_button = ttk.Button(row, text=first_run.no_label(), command=lambda: self._answer(False))
        self.no_button.pack(side="right")
        self.yes_button = ttk.Button(row, text=first_run.yes_label(), command=lambda: self._answer(True))
        self.yes_button.pack(side="right", padx=(0, 8))
        first_run.mark_asked()  # shown once: a closed window, a crash or a second process never asks again

    def _answer(self, take_part: bool) -> None:
        self.answer = self.first_run.answer(take_part)
        self.window.destroy()

    def close(self) -> None:
        """Closed without an answer: nothing changes (the product stays off), and it is not asked again."""
        self.window.destroy()
