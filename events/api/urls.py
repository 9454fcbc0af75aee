from django.urls import path

from events.api import pipeline, views

urlpatterns = [
    path("webhook/autoscale/<str:service>", views.AlertmanagerWebhookView.as_view(), name="webhook-autoscale"),
    path("autoscaling/events", views.ScaleOutEventListView.as_view(), name="event-list"),
    path("autoscaling/events/<int:pk>", views.ScaleOutEventDetailView.as_view(), name="event-detail"),
    path("autoscaling/notifications", views.AlertNotificationListView.as_view(), name="notification-list"),
    path("autoscaling/notifications/<int:pk>", views.AlertNotificationDetailView.as_view(), name="notification-detail"),
    path("autoscaling/instances/<int:pk>/remove", views.InstanceRemoveView.as_view(), name="instance-remove"),
    path("autoscaling/decisions", views.ScalingDecisionListView.as_view(), name="decision-list"),
    path("events/<int:event_id>/callback/status", views.StatusCallbackView.as_view(), name="event-callback-status"),
    path("events/<int:event_id>/callback/step", views.StepCallbackView.as_view(), name="event-callback-step"),
    path("events/<int:event_id>/callback/ip", pipeline.IpListView.as_view(), name="callback-ip"),
    path("events/<int:event_id>/callback/ip/reserve", pipeline.IpReserveView.as_view(), name="callback-ip-reserve"),
    path("events/<int:event_id>/callback/ip/confirm", pipeline.IpConfirmView.as_view(), name="callback-ip-confirm"),
    path("events/<int:event_id>/callback/ip/skip", pipeline.IpSkipView.as_view(), name="callback-ip-skip"),
    path("events/<int:event_id>/callback/ip/release", pipeline.IpReleaseView.as_view(), name="callback-ip-release"),
    path("events/<int:event_id>/callback/instances", pipeline.InstanceRecordView.as_view(), name="callback-instances"),
    path(
        "events/<int:event_id>/callback/instances/<int:instance_id>",
        pipeline.InstanceReportView.as_view(),
        name="callback-instance",
    ),
    path("jenkins/jobs/<str:job_name>/builds", views.JenkinsBuildListView.as_view(), name="jenkins-builds"),
    path(
        "jenkins/jobs/<str:job_name>/builds/<int:number>",
        views.JenkinsBuildDetailView.as_view(),
        name="jenkins-build",
    ),
    path(
        "jenkins/jobs/<str:job_name>/builds/<int:number>/log",
        views.JenkinsBuildLogView.as_view(),
        name="jenkins-build-log",
    ),
]
