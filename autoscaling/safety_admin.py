"""The safety nets in the config admin: what is suspended and the circuit breaker (a list column and a field of the
change page), and the operator actions: suspend processes, resume them, resume the breaker. Doors only: the writes
are autoscaling/safety_services.py's."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from access import roles
from autoscaling import safety_services
from autoscaling.models import ProcessSuspension

Process = ProcessSuspension.Process


class SuspendForm(forms.Form):
    processes = forms.MultipleChoiceField(
        label=_("Processes"),
        choices=Process.choices,
        initial=[Process.SCALE_OUT, Process.SCALE_IN, Process.REPLACE, Process.INTAKE],
        widget=forms.CheckboxSelectMultiple,
    )
    reason = forms.CharField(label=_("Reason"), max_length=500, required=False)


class ResumeForm(forms.Form):
    processes = forms.MultipleChoiceField(
        label=_("Processes"),
        choices=Process.choices,
        initial=[Process.SCALE_OUT, Process.SCALE_IN, Process.REPLACE, Process.INTAKE],
        widget=forms.CheckboxSelectMultiple,
    )


def _when(moment):
    return date_format(localtime(moment), "SHORT_DATETIME_FORMAT") if moment else "-"


class SafetyAdminMixin:
    """For AutoscalingConfigAdmin: `safety_status` (list), `safety` (change page) and three actions."""

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("breaker__reset_by")
            .prefetch_related("suspensions__suspended_by")
        )

    def has_suspend_permission(self, request):
        return request.user.has_perm(roles.SCALING_SUSPEND)

    @admin.display(description=_("safety nets"))
    def safety_status(self, obj):
        """ "Breaker open" and the suspended processes, or nothing when all runs."""
        parts = [
            format_html('<span class="breaker-open">{}</span>', gettext("Circuit breaker open"))
            if safety_services.breaker_state(config=obj)["state"] == "open"
            else "",
            *(
                format_html(
                    '<span class="suspended" data-process="{}" title="{}">{}</span>',
                    row.process,
                    gettext("%(process)s suspended by %(user)s at %(when)s: %(reason)s")
                    % {
                        "process": row.get_process_display(),
                        "user": row.suspended_by.get_username() if row.suspended_by else "-",
                        "when": _when(row.suspended_at),
                        "reason": row.reason or "-",
                    },
                    gettext("%(process)s suspended") % {"process": row.get_process_display()},
                )
                for row in obj.suspensions.all()
            ),
        ]
        return format_html_join("; ", "{}", ((part,) for part in parts if part)) or "-"

    @admin.display(description=_("suspended processes and circuit breaker"))
    def safety(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        state = safety_services.breaker_state(config=obj)
        if state["state"] == "open":
            breaker = gettext(
                "Circuit breaker open since %(opened)s: the last %(failures)d scale-outs failed (the last one event "
                "#%(event)s); no scale-out is triggered until a single trial scale-out at %(retry)s, or until an "
                "operator resumes it."
            ) % {
                "opened": _when(state["opened_at"]),
                "failures": state["failures"],
                "event": state["last_failed_event"] or "-",
                "retry": _when(state["retry_at"]),
            }
        else:
            breaker = gettext(
                "Circuit breaker closed: %(failures)d consecutive failed scale-outs; it opens at %(threshold)d."
            ) % {"failures": state["failures"], "threshold": state["threshold"]}
        if state["resumed_at"]:
            breaker += " " + gettext("Last resumed by %(user)s at %(when)s.") % {
                "user": state["resumed_by"] or "-",
                "when": _when(state["resumed_at"]),
            }
        rows = format_html_join(
            "",
            '<li class="suspended" data-process="{}">{}</li>',
            (
                (
                    row.process,
                    gettext("%(process)s suspended by %(user)s at %(when)s: %(reason)s")
                    % {
                        "process": row.get_process_display(),
                        "user": row.suspended_by.get_username() if row.suspended_by else "-",
                        "when": _when(row.suspended_at),
                        "reason": row.reason or "-",
                    },
                )
                for row in obj.suspensions.all()
            ),
        )
        return format_html(
            '<p class="breaker" data-state="{}">{}</p><ul>{}</ul>',
            state["state"],
            breaker,
            rows or format_html("<li>{}</li>", gettext("No process is suspended.")),
        )

    def _processes_action(self, request, queryset, *, form_class, action, title, intro, submit, apply, done):
        """Suspend or resume: the form first (with the selected services), then `apply(config, data)` for each
        service, and `done(config, changed)`'s message for each."""
        form = form_class(request.POST if request.POST.get("confirmed") == "yes" else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": title,
                "intro": intro,
                "submit": submit,
                "opts": self.opts,
                "configs": queryset,
                "form": form,
                "action": action,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/autoscaling/autoscalingconfig/processes.html", context)
        for config in queryset:
            self.message_user(request, done(config, apply(config, form.cleaned_data)))
        return None

    @admin.action(description=_("Suspend scaling processes of the selected services…"), permissions=["suspend"])
    def suspend_processes(self, request, queryset):
        return self._processes_action(
            request,
            queryset,
            form_class=SuspendForm,
            action="suspend_processes",
            title=gettext("Suspend scaling processes"),
            intro=gettext(
                "While suspended, what the process would do is recorded as a decision and nothing is triggered."
            ),
            submit=gettext("Suspend"),
            apply=lambda config, data: safety_services.config_processes_suspend(
                config=config, processes=data["processes"], reason=data["reason"], user=request.user
            ),
            done=lambda config, new: (
                ngettext(
                    "%(service)s: %(count)d process suspended.", "%(service)s: %(count)d processes suspended.", len(new)
                )
                % {"service": config.service_name, "count": len(new)}
            ),
        )

    @admin.action(description=_("Resume scaling processes of the selected services…"), permissions=["suspend"])
    def resume_processes(self, request, queryset):
        return self._processes_action(
            request,
            queryset,
            form_class=ResumeForm,
            action="resume_processes",
            title=gettext("Resume scaling processes"),
            intro=gettext("The processes resumed decide and act again from the next signal on."),
            submit=gettext("Resume"),
            apply=lambda config, data: safety_services.config_processes_resume(
                config=config, processes=data["processes"], user=request.user
            ),
            done=lambda config, resumed: (
                ngettext(
                    "%(service)s: %(count)d process resumed.", "%(service)s: %(count)d processes resumed.", len(resumed)
                )
                % {"service": config.service_name, "count": len(resumed)}
            ),
        )

    @admin.action(description=_("Resume the circuit breaker of the selected services now"), permissions=["suspend"])
    def resume_breaker(self, request, queryset):
        for config in queryset:
            was_open = safety_services.config_breaker_resume(config=config, user=request.user)
            message = (
                gettext("%(service)s: the circuit breaker is closed; scale-outs go again.")
                if was_open
                else gettext("%(service)s: the circuit breaker was not open; its count of failures starts from 0.")
            )
            self.message_user(request, message % {"service": config.service_name}, messages.SUCCESS)
