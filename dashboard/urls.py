from django.urls import path

from dashboard import key_reports, views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("sign-in/", views.SignInView.as_view(), name="sign-in"),
    path("sign-out/", views.SignOutView.as_view(), name="sign-out"),
    # A key's reports (dashboard/key_reports.py).
    path("keys/<int:key_id>/usage/", key_reports.key_usage_page, name="key-usage"),
    path("keys/<int:key_id>/requests/", key_reports.key_requests_page, name="key-requests"),
    path("keys/<int:key_id>/statements/", key_reports.key_statements, name="key-statements"),
    path(
        "keys/<int:key_id>/statements/<str:month>/",
        key_reports.key_statement_page,
        name="key-statement",
    ),
]
