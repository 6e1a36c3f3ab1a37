from django.urls import path

from training import views

app_name = "training"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("trust/", views.trust, name="trust"),
    path("rounds/start/", views.start, name="start"),
    path("rounds/<int:pk>/", views.round_detail, name="round"),
    path("rounds/<int:pk>/live/", views.round_live, name="round-live"),
    path("rounds/<int:pk>/cancel/", views.cancel, name="cancel"),
    path("rounds/<int:pk>/retry/", views.retry, name="retry"),
    path("policies/<int:pk>/promote/", views.promote, name="promote"),
]
