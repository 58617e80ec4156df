from django.urls import path

from dashboard import (
    account_views,
    alert_views,
    key_reports,
    key_views,
    money_views,
    security_views,
    settings_views,
    top_up_views,
)

app_name = "dashboard"

urlpatterns = [
    path("", money_views.overview, name="overview"),
    path("sign-in/", account_views.SignInView.as_view(), name="sign-in"),
    path("sign-out/", account_views.SignOutView.as_view(), name="sign-out"),
    # ---- accounts: sign-in's code step, sign-up, password reset, security ----
    path("sign-in/code/", account_views.sign_in_code, name="sign-in-code"),
    path("sign-up/", account_views.sign_up, name="sign-up"),
    path("verify-email/", account_views.verify_email, name="verify-email"),
    path("verify-email/<str:token>/", account_views.verify_email_link, name="verify-email-link"),
    path("password-reset/", account_views.PasswordResetView.as_view(), name="password-reset"),
    path(
        "password-reset/sent/",
        account_views.PasswordResetSentView.as_view(),
        name="password-reset-sent",
    ),
    path(
        "password-reset/done/",
        account_views.PasswordResetDoneView.as_view(),
        name="password-reset-done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        account_views.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path("security/", security_views.security, name="security"),
    path("security/password/", security_views.password_change, name="password-change"),
    path("security/two-factor/", security_views.two_factor_setup, name="two-factor"),
    path("security/two-factor/start/", security_views.two_factor_begin, name="two-factor-start"),
    path("security/two-factor/off/", security_views.two_factor_off, name="two-factor-off"),
    path("security/backup-codes/", security_views.backup_codes, name="backup-codes"),
    # Keys: the list, a new key (with its preview) and its secret shown once, a key's page
    # and its actions.
    path("keys/", key_views.key_list_page, name="key-list"),
    path("keys/new/", key_views.key_create_page, name="key-create"),
    path("keys/<int:key_id>/", key_views.key_page, name="key-detail"),
    path("keys/<int:key_id>/created/", key_views.key_created_page, name="key-created"),
    path("keys/<int:key_id>/top-up/", key_views.key_top_up_page, name="key-top-up"),
    path("keys/<int:key_id>/limits/", key_views.key_limits_page, name="key-limits"),
    path("keys/<int:key_id>/revoke/", key_views.key_revoke, name="key-revoke"),
    path("keys/<int:key_id>/reactivate/", key_views.key_reactivate, name="key-reactivate"),
    path("keys/<int:key_id>/delete/", key_views.key_delete_page, name="key-delete"),
    # Money and settings: the wallet's ledger, earnings, API tokens, the account's settings.
    path("wallet/", money_views.wallet, name="wallet"),
    # Card top-ups: the form (its preview, then Stripe), a top-up's page Stripe returns to.
    path("wallet/top-up/", top_up_views.top_up_create_page, name="top-up"),
    path("wallet/top-ups/<int:top_up_id>/", top_up_views.top_up_page, name="top-up-detail"),
    path("earnings/", money_views.earnings, name="earnings"),
    path("tokens/", settings_views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", settings_views.token_revoke, name="token-revoke"),
    path("settings/", settings_views.account_settings, name="settings"),
    # Alerts: the delivery log, the settings' alert section and a key's own shares.
    path("alerts/", alert_views.alerts_log, name="alerts"),
    path("settings/alerts/", alert_views.alert_settings_save, name="alert-settings"),
    path("settings/alerts/secret/", alert_views.webhook_secret_new, name="alert-webhook-secret"),
    path("settings/alerts/test/", alert_views.webhook_test, name="alert-webhook-test"),
    path("keys/<int:key_id>/alerts/", alert_views.key_alerts_save, name="key-alerts"),
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
