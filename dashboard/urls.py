from django.urls import path

from dashboard import account_views, money_views, views

app_name = "dashboard"

urlpatterns = [
    path("", money_views.overview, name="overview"),
    path("sign-in/", views.SignInView.as_view(), name="sign-in"),
    path("sign-out/", views.SignOutView.as_view(), name="sign-out"),
    path("wallet/", money_views.wallet, name="wallet"),
    path("earnings/", money_views.earnings, name="earnings"),
    path("tokens/", account_views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", account_views.token_revoke, name="token-revoke"),
    path("settings/", account_views.account_settings, name="settings"),
]
