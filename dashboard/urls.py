from django.urls import path

from dashboard import key_views, views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("sign-in/", views.SignInView.as_view(), name="sign-in"),
    path("sign-out/", views.SignOutView.as_view(), name="sign-out"),
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
]
