from django.urls import path

from dashboard import money_views, views

app_name = "dashboard"

urlpatterns = [
    path("", money_views.overview, name="overview"),
    path("sign-in/", views.SignInView.as_view(), name="sign-in"),
    path("sign-out/", views.SignOutView.as_view(), name="sign-out"),
    path("wallet/", money_views.wallet, name="wallet"),
    path("earnings/", money_views.earnings, name="earnings"),
]
